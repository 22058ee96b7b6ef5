#!/usr/bin/env bash
# Every C source and header is formatted with the project's .clang-format.
# ctest-labels: no-asan
source "$(dirname "$0")/functions.sh"
requires clang-format git
cd "$(dirname "$0")/../.."
[[ -d .git || -f .git ]] || skip "not a git checkout"
bad=()
while IFS= read -r f; do
	clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done < <(git ls-files '*.c' '*.h')
((${#bad[@]} == 0)) || fail "not formatted (run clang-format -i): ${bad[*]}"
echo PASS
