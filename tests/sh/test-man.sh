# The manual: every man/*.scd page builds with scdoc into build/man, is named
# as its file says, renders with man, and `vdisk --help` lists only commands
# that have a page (their own vdisk-CMD.1, or a section of vdisk.1).
source "$(dirname "$0")/functions.sh"
requires scdoc man

shopt -s nullglob
pages=("$SRC_DIR"/man/*.scd)
[[ ${#pages[@]} -gt 0 ]] || fail "no pages in man/"
for scd in "${pages[@]}"; do
	page=$(basename "$scd" .scd) # vdisk-ram.7
	name=${page%.*}
	sec=${page##*.}
	[[ $sec =~ ^[1-9]$ ]] || fail "$scd: not named <page>.<section>.scd"
	scdoc <"$scd" >"$TMP/$page" 2>"$TMP/err" || fail "$scd does not build: $(cat "$TMP/err")"
	built=$BUILD_DIR/man/$page
	[[ -s $built ]] || fail "$page was not built into build/man"
	cmp -s "$built" "$TMP/$page" || fail "build/man/$page is out of date with $scd"
	head -1 "$scd" | grep -cx "$name($sec)" >/dev/null || fail "$scd: first line is not '$name($sec)'"
	MANWIDTH=80 man -l "$TMP/$page" >"$TMP/text" 2>"$TMP/err" || fail "man cannot render $page"
	grep -q '^NAME' "$TMP/text" || fail "$page has no NAME section"
	grep -q "^       $name - " "$TMP/text" || fail "$page: NAME does not start with '$name - '"
	grep -q '^SEE ALSO' "$TMP/text" || fail "$page has no SEE ALSO section"
done

# every command `vdisk --help` lists has a page
"$VDISK" --help >"$TMP/help"
cmds=$(awk '/^Commands:/ {on=1; next} on && /^$/ {exit} on {print $1}' "$TMP/help")
[[ -n $cmds ]] || fail "vdisk --help lists no commands"
for c in $cmds; do
	[[ -f $SRC_DIR/man/vdisk-$c.1.scd ]] && continue
	grep -q "^## vdisk $c\b" "$SRC_DIR/man/vdisk.1.scd" ||
		fail "vdisk --help lists '$c', which has neither man/vdisk-$c.1.scd nor a section in vdisk.1"
done
# and vdisk.1 describes no command that does not exist
for c in $(sed -n 's/^## vdisk \([a-z]*\).*/\1/p' "$SRC_DIR/man/vdisk.1.scd"); do
	grep -qx "$c" <<<"$cmds" || fail "vdisk.1 describes '$c', which vdisk --help does not list"
done
echo "man ok: ${#pages[@]} pages"
