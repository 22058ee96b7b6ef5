# Shared helpers for the benchmark scripts (source it).
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$BENCH_DIR/.." && pwd)
VDISK=${VDISK:-$TOP/build/vdisk}
REPS=${REPS:-3}
RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
WORK=${WORK:-/tmp/vdisk-bench}

need_build() {
	[[ -x $VDISK ]] || (cd "$TOP" && scripts/build.sh build >/dev/null)
}

# median of numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# min-max of numbers on stdin
range() {
	sort -g | awk 'function k(a) { return a >= 1e6 ? sprintf("%.2fM", a/1e6) : sprintf("%.0fK", a/1e3) }
		NR==1 {lo=$1} {hi=$1} END {printf "%s-%s", k(lo), k(hi)}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
kiops() { awk -v a="$1" 'BEGIN { if (a >= 1e6) printf "%.2fM", a/1e6; else printf "%.0fK", a/1e3 }'; }

# fio IOPS (read+write) of one job from its JSON output
fio_iops() { jq '[.jobs[0].read.iops, .jobs[0].write.iops] | add'; }
