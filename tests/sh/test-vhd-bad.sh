#!/usr/bin/env bash
# Malformed VHD images (fuzz/corpus/vhd/bad-*, made by fuzz/vhd-make-corpus.py):
# each is refused with an error that names the file and the field, never a
# crash (this runs under ASan/UBSan too), and `vdisk check` says why as well.
source "$(dirname "$0")/functions.sh"
corpus=$SRC_DIR/fuzz/corpus/vhd
cd "$TMP"

declare -A want=(
	[bad-truncated-footer]="BAT entry 0: block at offset"
	[bad-tiny]="smaller than one 512-byte sector"
	[bad-cookie]='no footer (cookie "conectix")'
	[bad-checksum]="checksum: 0x"
	[bad-version]="file_format_version: 0x00020000"
	[bad-disk-type]="disk_type: 7"
	[bad-size-not-512]="current_size: 4000 is not a multiple of 512"
	[bad-fixed-too-big]="current_size: 8192 bytes do not fit"
	[bad-size-huge]="more than a VHD's 2040 GiB"
	[bad-header-cookie]='dynamic header: cookie is not "cxsparse"'
	[bad-header-checksum]="dynamic header: checksum"
	[bad-data-offset]="footer data_offset: 1099511627776"
	[bad-block-size-0]="block_size 0 is not a power of two"
	[bad-block-size-pow2]="block_size 3145728 is not a power of two"
	[bad-block-size-huge]="block_size 1073741824 is not a power of two"
	[bad-entries-huge]="max_table_entries 4294967295) does not fit"
	[bad-entries-small]="max_table_entries 3 blocks"
	[bad-bat-offset]="the BAT (table_offset 1099511627776"
	[bad-bat-past-end]="BAT entry 5: block at offset 8589934080"
	[bad-bat-over-header]="block 0 (BAT entry at sector 1) overlaps the dynamic header"
	[bad-bat-overlap]="block 1 (BAT entry at sector 12) overlaps block 0"
	[bad-locator-past-end]="parent locator 0 (data at offset 1073741824"
	[bad-locator-name]="locator 0 (W2ru): not valid UTF-16"
	[bad-locator-absolute]="'/etc/passwd': not a plain file name"
	[bad-locator-dotdot]="'..\\x.vhd': not a plain file name"
	[bad-parent-loop]="a loop: './bad-parent-loop' is its own ancestor"
)
n=0
for f in "$corpus"/bad-*; do
	name=$(basename "$f")
	[[ -n ${want[$name]:-} ]] || fail "$name: no expected error listed for it"
	cp "$f" "$name"
	expect_status 1 "$VDISK" info --read-only "vhd:path=$name"
	expect_stderr "${want[$name]}"
	[[ $name == bad-parent-loop ]] || expect_stderr "'$name'"
	expect_status 1 "$VDISK" check "vhd:path=$name"
	expect_stderr "${want[$name]}"
	cmp -s "$f" "$name" || fail "$name: changed by a failed open"
	n=$((n + 1))
done
((n == ${#want[@]})) || fail "$n images in the corpus, ${#want[@]} expected errors"

# absolute and .. parents: allowed only when the spec says so
mkdir sub
"$VDISK" create vhd sub/p.vhd 1M
"$VDISK" create vhd c.vhd --parent sub/p.vhd
expect_status 1 "$VDISK" info --read-only c.vhd
expect_stderr "not a plain file name in the child's directory"
expect_status 0 "$VDISK" info --read-only '{"type":"vhd","path":"c.vhd","allow-parent-paths":true}'
expect_status 0 "$VDISK" info --read-only '{"type":"vhd","path":"c.vhd","parent":"vhd:path=sub/p.vhd"}'
# a parent that is not the one the child was made on
"$VDISK" create vhd other.vhd 1M
expect_status 1 "$VDISK" info --read-only '{"type":"vhd","path":"c.vhd","parent":"vhd:path=other.vhd"}'
expect_stderr "is not the child's parent_unique_id"
"$VDISK" create vhd small.vhd 512k
expect_status 1 "$VDISK" info --read-only '{"type":"vhd","path":"c.vhd","parent":"vhd:path=small.vhd"}'
expect_stderr "differs from the child's"
# unknown keys, and options that need create
expect_status 1 "$VDISK" info --read-only '{"type":"vhd","path":"c.vhd","colour":1}'
expect_stderr "colour"
expect_status 1 "$VDISK" info --read-only '{"type":"vhd","path":"c.vhd","inner":"ram:size=1M"}'
expect_stderr "not both"
expect_status 1 "$VDISK" info '{"type":"vhd","path":"x.vhd","create":"1M","block-size":"3M"}'
expect_stderr "block-size"
[[ ! -e x.vhd ]] || fail "a refused create left a file"
# a writable open of a bare VHD path is refused; with the type it works
"$VDISK" create vhd w.vhd 1M
expect_status 1 "$VDISK" bench w.vhd --runtime 0.01 --rw write
expect_stderr "looks like a vhd image"
echo PASS
