# Sizes that do not fit are refused as too large, wherever a size is parsed
# (specs in shorthand and JSON, bench options), and bench refuses a region
# larger than the disk, as it refuses a block larger than the disk.
source "$(dirname "$0")/functions.sh"

expect_status 1 "$VDISK" info 'ram:size=99999999999999999999'
expect_stderr "size: '99999999999999999999' is too large"
expect_status 1 "$VDISK" info 'ram:size=16E'
expect_stderr "is too large"
expect_status 1 "$VDISK" info "file:path=$TMP/x.img,create=18446744073709551104"
expect_stderr "create: '18446744073709551104' is too large"
[[ ! -e $TMP/x.img ]] || fail "a file was created for a size that does not fit"
expect_status 1 "$VDISK" info '{"type":"ram","size":"9223372036854775808"}'
expect_stderr "is too large"
expect_status 1 "$VDISK" info '{"type":"null","size":"1Z"}'
expect_stderr "is not a size"

expect_status 2 "$VDISK" bench ram:size=1M --size 2M
expect_stderr "--size: 2097152 is larger than the disk (1048576 bytes)"
expect_status 2 "$VDISK" bench ram:size=1M --size 99999999999999999999
expect_stderr "--size: '99999999999999999999' is too large"
expect_status 2 "$VDISK" bench ram:size=1M --bs 2M
expect_status 0 "$VDISK" bench ram:size=1M --size 512k --runtime 0.1
echo "sizes ok"
