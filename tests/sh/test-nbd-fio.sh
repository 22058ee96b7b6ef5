#!/usr/bin/env bash
# fio's nbd engine at iodepth 32 with crc32c verification: random writes then
# verified reads, over one and over two connections, on a RAM disk and a file.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
requires fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio has no nbd engine"

for spec in ram:size=64M "file:path=$TMP/disk.img,create=64M"; do
	start_server "$spec"
	for jobs in 1 2; do
		fio --name=verify --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k \
			--iodepth=32 --size=32M --offset_increment=32M --numjobs=$jobs \
			--verify=crc32c --verify_fatal=1 --do_verify=1 --randrepeat=0 \
			--output="$TMP/fio.out" || fail "$spec, $jobs jobs: $(cat "$TMP/fio.out")"
		grep -q 'verify' "$TMP/fio.out" && grep -qi 'err= 0' "$TMP/fio.out" ||
			fail "$spec, $jobs jobs: $(cat "$TMP/fio.out")"
	done
	# mixed sizes, reads and writes racing on one connection
	fio --name=mixed --ioengine=nbd --uri="$URI" --rw=randrw --bsrange=512-256k \
		--iodepth=32 --size=16M --runtime=2 --time_based \
		--output="$TMP/fio.out" || fail "$spec mixed: $(cat "$TMP/fio.out")"
	stop_server
done
