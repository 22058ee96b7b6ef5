/* The crypt decorator: the IEEE 1619 XTS-AES-256 vector through the disk at
 * its sector number (vector 10 through a file, 11 to 14 at their sector
 * numbers up to 2^40), every implementation agreeing, scatter-gather shapes that
 * split sectors across buffers, the caller's buffer left alone, keys refused
 * with messages that never show them, unmap and zeroing narrowed, errors from
 * below kept, and back-pressure on the staging pool. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

/* IEEE 1619-2007 XTS-AES-256 vector 10: key1 = digits of e, key2 = digits of
 * pi, data unit sequence number 0xff, 512 bytes 00 01 .. ff 00 01 .. ff. */
static const char *const V10_KEY =
    "2718281828459045235360287471352662497757247093699959574966967627"
    "3141592653589793238462643383279502884197169399375105820974944592";
static const char *const V10_CT =
    "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b"
    "5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd"
    "5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0"
    "c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca"
    "2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0"
    "b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f"
    "93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec"
    "583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a"
    "84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1"
    "505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae"
    "9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f90c29"
    "a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac"
    "6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f"
    "645e8b7e9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed4385"
    "1ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa"
    "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151";

/* IEEE 1619-2007 XTS-AES-256 vectors 11 to 14: the key and plaintext of
 * vector 10 at data unit sequence numbers 0xffff .. 0xffffffffff. */
static const struct {
	uint64_t seq;
	const char *ct;
} V11_14[] = {
    {0xffffull, "77a31251618a15e6b92d1d66dffe7b50b50bad552305ba0217a610688eff7e11"
                "e1d0225438e093242d6db274fde801d4cae06f2092c728b2478559df58e837c2"
                "469ee4a4fa794e4bbc7f39bc026e3cb72c33b0888f25b4acf56a2a9804f1ce6d"
                "3d6e1dc6ca181d4b546179d55544aa7760c40d06741539c7e3cd9d2f6650b201"
                "3fd0eeb8c2b8e3d8d240ccae2d4c98320a7442e1c8d75a42d6e6cfa4c2eca179"
                "8d158c7aecdf82490f24bb9b38e108bcda12c3faf9a21141c3613b58367f922a"
                "aa26cd22f23d708dae699ad7cb40a8ad0b6e2784973dcb605684c08b8d6998c6"
                "9aac049921871ebb65301a4619ca80ecb485a31d744223ce8ddc2394828d6a80"
                "470c092f5ba413c3378fa6054255c6f9df4495862bbb3287681f931b687c888a"
                "bf844dfc8fc28331e579928cd12bd2390ae123cf03818d14dedde5c0c24c8ab0"
                "18bfca75ca096f2d531f3d1619e785f1ada437cab92e980558b3dce1474afb75"
                "bfedbf8ff54cb2618e0244c9ac0d3c66fb51598cd2db11f9be39791abe447c63"
                "094f7c453b7ff87cb5bb36b7c79efb0872d17058b83b15ab0866ad8a58656c5a"
                "7e20dbdf308b2461d97c0ec0024a2715055249cf3b478ddd4740de654f75ca68"
                "6e0d7345c69ed50cdc2a8b332b1f8824108ac937eb050585608ee734097fc090"
                "54fbff89eeaeea791f4a7ab1f9868294a4f9e27b42af8100cb9d59cef9645803"},
    {0xffffffull, "e387aaa58ba483afa7e8eb469778317ecf4cf573aa9d4eac23f2cdf914e4e200"
                  "a8b490e42ee646802dc6ee2b471b278195d60918ececb44bf79966f83faba049"
                  "9298ebc699c0c8634715a320bb4f075d622e74c8c932004f25b41e361025b5a8"
                  "7815391f6108fc4afa6a05d9303c6ba68a128a55705d415985832fdeaae6c8e1"
                  "9110e84d1b1f199a2692119edc96132658f09da7c623efcec712537a3d94c0bf"
                  "5d7e352ec94ae5797fdb377dc1551150721adf15bd26a8efc2fcaad56881fa9e"
                  "62462c28f30ae1ceaca93c345cf243b73f542e2074a705bd2643bb9f7cc79bb6"
                  "e7091ea6e232df0f9ad0d6cf502327876d82207abf2115cdacf6d5a48f6c1879"
                  "a65b115f0f8b3cb3c59d15dd8c769bc014795a1837f3901b5845eb491adfefe0"
                  "97b1fa30a12fc1f65ba22905031539971a10f2f36c321bb51331cdefb39e3964"
                  "c7ef079994f5b69b2edd83a71ef549971ee93f44eac3938fcdd61d01fa71799d"
                  "a3a8091c4c48aa9ed263ff0749df95d44fef6a0bb578ec69456aa5408ae32c7a"
                  "f08ad7ba8921287e3bbee31b767be06a0e705c864a769137df28292283ea81a2"
                  "480241b44d9921cdbec1bc28dc1fda114bd8e5217ac9d8ebafa720e9da4f9ace"
                  "231cc949e5b96fe76ffc21063fddc83a6b8679c00d35e09576a875305bed5f36"
                  "ed242c8900dd1fa965bc950dfce09b132263a1eef52dd6888c309f5a7d712826"},
    {0xffffffffull, "bf53d2dade78e822a4d949a9bc6766b01b06a8ef70d26748c6a7fc36d80ae4c5"
                    "520f7c4ab0ac8544424fa405162fef5a6b7f229498063618d39f0003cb5fb8d1"
                    "c86b643497da1ff945c8d3bedeca4f479702a7a735f043ddb1d6aaade3c4a0ac"
                    "7ca7f3fa5279bef56f82cd7a2f38672e824814e10700300a055e1630b8f1cb0e"
                    "919f5e942010a416e2bf48cb46993d3cb6a51c19bacf864785a00bc2ecff15d3"
                    "50875b246ed53e68be6f55bd7e05cfc2b2ed6432198a6444b6d8c247fab941f5"
                    "69768b5c429366f1d3f00f0345b96123d56204c01c63b22ce78baf116e525ed9"
                    "0fdea39fa469494d3866c31e05f295ff21fea8d4e6e13d67e47ce722e9698a1c"
                    "1048d68ebcde76b86fcf976eab8aa9790268b7068e017a8b9b749409514f1053"
                    "027fd16c3786ea1bac5f15cb79711ee2abe82f5cf8b13ae73030ef5b9e4457e7"
                    "5d1304f988d62dd6fc4b94ed38ba831da4b7634971b6cd8ec325d9c61c00f1df"
                    "73627ed3745a5e8489f3a95c69639c32cd6e1d537a85f75cc844726e8a72fc00"
                    "77ad22000f1d5078f6b866318c668f1ad03d5a5fced5219f2eabbd0aa5c0f460"
                    "d183f04404a0d6f469558e81fab24a167905ab4c7878502ad3e38fdbe62a4155"
                    "6cec37325759533ce8f25f367c87bb5578d667ae93f9e2fd99bcbc5f2fbba88c"
                    "f6516139420fcff3b7361d86322c4bd84c82f335abb152c4a93411373aaa8220"},
    {0xffffffffffull, "64497e5a831e4a932c09be3e5393376daa599548b816031d224bbf50a818ed23"
                      "50eae7e96087c8a0db51ad290bd00c1ac1620857635bf246c176ab463be30b80"
                      "8da548081ac847b158e1264be25bb0910bbc92647108089415d45fab1b3d2604"
                      "e8a8eff1ae4020cfa39936b66827b23f371b92200be90251e6d73c5f86de5fd4"
                      "a950781933d79a28272b782a2ec313efdfcc0628f43d744c2dc2ff3dcb66999b"
                      "50c7ca895b0c64791eeaa5f29499fb1c026f84ce5b5c72ba1083cddb5ce45434"
                      "631665c333b60b11593fb253c5179a2c8db813782a004856a1653011e93fb6d8"
                      "76c18366dd8683f53412c0c180f9c848592d593f8609ca736317d356e13e2bff"
                      "3a9f59cd9aeb19cd482593d8c46128bb32423b37a9adfb482b99453fbe25a41b"
                      "f6feb4aa0bef5ed24bf73c762978025482c13115e4015aac992e5613a3b5c2f6"
                      "85b84795cb6e9b2656d8c88157e52c42f978d8634c43d06fea928f2822e465aa"
                      "6576e9bf419384506cc3ce3c54ac1a6f67dc66f3b30191e698380bc999b05abc"
                      "e19dc0c6dcc2dd001ec535ba18deb2df1a101023108318c75dc98611a09dc48a"
                      "0acdec676fabdf222f07e026f059b672b56e5cbc8e1d21bbd867dd9272120546"
                      "81d70ea737134cdfce93b6f82ae22423274e58a0821cc5502e2d0ab4585e94de"
                      "6975be5e0b4efce51cd3e70c25a1fbbbd609d273ad5b0d59631c531f6a0a57b9"},
};

static const char *const IMPLS[] = {"auto", "xts", "xts-evp", "ecb", "ecb-generic"};

/* another valid key: 00 01 02 .. 3f */
static const char *const KEY2 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                                "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

static void unhex(const char *h, unsigned char *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		assert_int_equal(sscanf(h + 2 * i, "%2x", &v), 1);
		out[i] = (unsigned char)v;
	}
}

static char *crypt_spec(const char *impl, const char *key, const char *inner)
{
	char *s;
	assert_true(asprintf(&s,
	                     "{\"type\":\"crypt\",\"implementation\":\"%s\",\"key-hex\":\"%s\","
	                     "\"inner\":%s}",
	                     impl, key, inner) > 0);
	return s;
}

static void test_ieee1619_vector10(void **state)
{
	(void)state;
	unsigned char pt[512], ct[512], got[512];
	for (int i = 0; i < 512; i++)
		pt[i] = (unsigned char)i;
	unhex(V10_CT, ct, 512);
	char img[512], inner[700];
	snprintf(img, sizeof img, "%s/v10.img", tu_tmpdir());
	snprintf(inner, sizeof inner, "{\"type\":\"file\",\"path\":\"%s\",\"create\":\"1M\"}", img);
	for (size_t k = 0; k < sizeof IMPLS / sizeof *IMPLS; k++) {
		char *spec = crypt_spec(IMPLS[k], V10_KEY, inner);
		struct vdisk *d = tu_open(spec, 0);
		/* sector 255 is the vector's data unit sequence number */
		assert_int_equal(vdisk_pwrite(d, pt, 512, 255 * 512, 0).kind, VDISK_OK);
		assert_int_equal(vdisk_flush_sync(d).kind, VDISK_OK);
		int fd = open(img, O_RDWR);
		assert_true(fd >= 0);
		assert_int_equal(pread(fd, got, 512, 255 * 512), 512);
		if (memcmp(got, ct, 512) != 0)
			fail_msg("%s: vector 10 ciphertext differs", IMPLS[k]);
		/* and back: ciphertext put in place decrypts to the plaintext */
		assert_int_equal(pwrite(fd, ct, 512, 77 * 512), 512);
		close(fd);
		memset(got, 0, sizeof got);
		/* at sector 77 the tweak differs: not the plaintext */
		assert_int_equal(vdisk_pread(d, got, 512, 77 * 512).kind, VDISK_OK);
		assert_memory_not_equal(got, pt, 512);
		vdisk_unref(d);
		fd = open(img, O_RDWR);
		assert_int_equal(pwrite(fd, ct, 512, 255 * 512), 512);
		close(fd);
		d = tu_open(spec, 0);
		assert_int_equal(vdisk_pread(d, got, 512, 255 * 512).kind, VDISK_OK);
		if (memcmp(got, pt, 512) != 0)
			fail_msg("%s: vector 10 does not decrypt", IMPLS[k]);
		vdisk_unref(d);
		free(spec);
	}
}

/* A disk of 2^50 sectors below: every read returns below_ct, every write
 * leaves its first sector in below_last.  For vectors at sector numbers no
 * file or RAM disk here reaches. */
static unsigned char below_ct[512], below_last[512];

static int cap_open(struct vdisk *d, json_t *cfg)
{
	(void)cfg;
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = 512;
	m->sector_count = 1ull << 50;
	return 0;
}
static int cap_read(struct vdisk_req *r)
{
	for (uint64_t i = 0; i < r->count; i++)
		vdisk_iov_from_buf(r->iov, r->iovcnt, (size_t)i * 512, below_ct, 512);
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}
static int cap_write(struct vdisk_req *r)
{
	vdisk_iov_to_buf(r->iov, r->iovcnt, 0, below_last, 512);
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}
static const struct vdisk_driver capture_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "capture",
    .open = cap_open,
    .read = cap_read,
    .write = cap_write,
};

static void test_ieee1619_vectors_11_to_14(void **state)
{
	(void)state;
	assert_int_equal(vdisk_register_driver(&capture_driver), 0);
	unsigned char pt[512], ct[512], got[512];
	for (int i = 0; i < 512; i++)
		pt[i] = (unsigned char)i;
	for (size_t k = 0; k < sizeof IMPLS / sizeof *IMPLS; k++) {
		char *spec = crypt_spec(IMPLS[k], V10_KEY, "{\"type\":\"capture\"}");
		struct vdisk *d = tu_open(spec, 0);
		free(spec);
		for (size_t v = 0; v < sizeof V11_14 / sizeof *V11_14; v++) {
			unhex(V11_14[v].ct, ct, 512);
			assert_int_equal(vdisk_pwrite(d, pt, 512, V11_14[v].seq * 512, 0).kind,
			                 VDISK_OK);
			if (memcmp(below_last, ct, 512) != 0)
				fail_msg("%s: vector %zu (sector %#llx) ciphertext differs",
				         IMPLS[k], 11 + v, (unsigned long long)V11_14[v].seq);
			memcpy(below_ct, ct, 512);
			assert_int_equal(vdisk_pread(d, got, 512, V11_14[v].seq * 512).kind,
			                 VDISK_OK);
			if (memcmp(got, pt, 512) != 0)
				fail_msg("%s: vector %zu does not decrypt", IMPLS[k], 11 + v);
		}
		vdisk_unref(d);
	}
}

/* Every implementation writes the same ciphertext and reads the others'. */
static void test_implementations_agree(void **state)
{
	(void)state;
	for (unsigned ss = 512; ss <= 4096; ss *= 8) {
		size_t len = 64 * 1024;
		unsigned char *pt = tu_alloc(len), *got = tu_alloc(len), *ref = tu_alloc(len);
		tu_pattern(pt, len, 1000, ss, ss);
		char img[512], inner[700];
		snprintf(img, sizeof img, "%s/agree-%u.img", tu_tmpdir(), ss);
		snprintf(inner, sizeof inner,
		         "{\"type\":\"file\",\"path\":\"%s\",\"create\":\"4M\",\"sector-size\":%u}",
		         img, ss);
		for (size_t k = 0; k < sizeof IMPLS / sizeof *IMPLS; k++) {
			char *spec = crypt_spec(IMPLS[k], KEY2, inner);
			struct vdisk *d = tu_open(spec, 0);
			assert_int_equal(vdisk_pwrite(d, pt, len, 16 * ss, 0).kind, VDISK_OK);
			vdisk_unref(d);
			int fd = open(img, O_RDONLY);
			assert_int_equal(pread(fd, k ? got : ref, len, 16 * ss), (ssize_t)len);
			close(fd);
			if (k && memcmp(got, ref, len) != 0)
				fail_msg("%u-byte sectors: %s and %s differ", ss, IMPLS[k],
				         IMPLS[0]);
			free(spec);
			/* read with the next implementation */
			spec = crypt_spec(IMPLS[(k + 1) % 5], KEY2, inner);
			d = tu_open(spec, 0);
			memset(got, 0, len);
			assert_int_equal(vdisk_pread(d, got, len, 16 * ss).kind, VDISK_OK);
			assert_memory_equal(got, pt, len);
			vdisk_unref(d);
			free(spec);
		}
		free(pt);
		free(got);
		free(ref);
	}
}

/* Sectors split across iovec elements, buffers at odd addresses: the same
 * ciphertext as one flat write, the same plaintext back, the caller's buffer
 * untouched. */
static void test_sg_shapes(void **state)
{
	(void)state;
	static const size_t shapes[][8] = {
	    {4096},
	    {100, 924, 513, 511, 1024, 1024},
	    {1, 511, 512, 2047, 1, 1024},
	    {2048, 1536, 512},
	    {512, 512, 512, 512, 512, 512, 512, 512},
	};
	static const size_t offsets[] = {0, 512, 513, 1028};
	char img[512], inner[700];
	snprintf(img, sizeof img, "%s/sg.img", tu_tmpdir());
	snprintf(inner, sizeof inner, "{\"type\":\"file\",\"path\":\"%s\",\"create\":\"1M\"}", img);
	for (size_t k = 0; k < sizeof IMPLS / sizeof *IMPLS; k++) {
		char *spec = crypt_spec(IMPLS[k], KEY2, inner);
		struct vdisk *d = tu_open(spec, 0);
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		unsigned char *flat = tu_alloc(4096), *want = tu_alloc(4096), *got = tu_alloc(4096);
		unsigned char *mem = tu_alloc(8192), *copy = tu_alloc(8192);
		tu_pattern(flat, 4096, 40, 512, 3);
		assert_int_equal(tu_write(q, 40, flat, 4096, 0).kind, VDISK_OK);
		assert_int_equal(tu_flush(q).kind, VDISK_OK);
		int fd = open(img, O_RDONLY);
		assert_int_equal(pread(fd, want, 4096, 40 * 512), 4096);
		for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
			for (size_t o = 0; o < sizeof offsets / sizeof *offsets; o++) {
				struct iovec iov[8];
				int n = 0;
				size_t pos = 0;
				unsigned char *base = mem + offsets[o];
				for (; n < 8 && shapes[s][n]; n++) {
					iov[n].iov_base = base + pos;
					iov[n].iov_len = shapes[s][n];
					pos += shapes[s][n];
				}
				assert_int_equal(pos, 4096);
				memcpy(base, flat, 4096);
				memcpy(copy, mem, 8192);
				unsigned char *a = tu_alloc(4096), *b = tu_alloc(4096);
				assert_int_equal(tu_writev(q, 80, iov, n, 0).kind, VDISK_OK);
				assert_memory_equal(mem, copy, 8192);
				assert_int_equal(tu_flush(q).kind, VDISK_OK);
				assert_int_equal(pread(fd, a, 4096, 80 * 512), 4096);
				/* the ciphertext of the same data written flat */
				assert_int_equal(tu_write(q, 80, flat, 4096, 0).kind, VDISK_OK);
				assert_int_equal(tu_flush(q).kind, VDISK_OK);
				assert_int_equal(pread(fd, b, 4096, 80 * 512), 4096);
				if (memcmp(a, b, 4096) != 0)
					fail_msg("%s: shape %zu offset %zu: ciphertext differs "
					         "from a flat write",
					         IMPLS[k], s, offsets[o]);
				/* and read back through the same shape */
				memset(base, 0, 4096);
				assert_int_equal(tu_readv(q, 80, iov, n).kind, VDISK_OK);
				assert_memory_equal(base, flat, 4096);
				free(a);
				free(b);
			}
		}
		/* the flat write at 40 was never disturbed */
		assert_int_equal(pread(fd, got, 4096, 40 * 512), 4096);
		assert_memory_equal(got, want, 4096);
		close(fd);
		free(flat);
		free(want);
		free(got);
		free(mem);
		free(copy);
		vdisk_queue_destroy(q);
		vdisk_unref(d);
		free(spec);
	}
}

static void expect_open_error(const char *spec, const char *what)
{
	char *s = tu_spec(spec);
	struct vdisk *d = vdisk_open(s, 0);
	if (d)
		fail_msg("'%s' opened", s);
	if (!strstr(vdisk_errmsg(), what))
		fail_msg("'%s': message '%s' lacks '%s'", s, vdisk_errmsg(), what);
	/* no message ever shows key material */
	assert_null(strstr(vdisk_errmsg(), "2718281828"));
	assert_null(strstr(vdisk_errmsg(), "0001020304"));
	assert_null(strstr(vdisk_errmsg(), "abababab"));
	free(s);
}

static void write_file(const char *name, const void *data, size_t len)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", tu_tmpdir(), name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
}

static void test_keys(void **state)
{
	(void)state;
	unsigned char k[65];
	unhex(KEY2, k, 64);
	k[64] = 0xab;
	write_file("k64", k, 64);
	write_file("k63", k, 63);
	write_file("k65", k, 65);
	unsigned char same[64];
	memset(same, 0xab, sizeof same);
	write_file("same", same, 64);
	const char *inner = "\"inner\":\"ram:size=1M\"";
	char spec[1024];

	snprintf(spec, sizeof spec, "{\"type\":\"crypt\",\"key-file\":\"@TMP@/k63\",%s}", inner);
	expect_open_error(spec, "63 bytes");
	snprintf(spec, sizeof spec, "{\"type\":\"crypt\",\"key-file\":\"@TMP@/k65\",%s}", inner);
	expect_open_error(spec, "key-file");
	snprintf(spec, sizeof spec, "{\"type\":\"crypt\",\"key-file\":\"@TMP@/same\",%s}", inner);
	expect_open_error(spec, "halves");
	snprintf(spec, sizeof spec, "{\"type\":\"crypt\",\"key-file\":\"@TMP@/none\",%s}", inner);
	expect_open_error(spec, "key-file");
	snprintf(spec, sizeof spec, "{\"type\":\"crypt\",\"key-file\":\"@TMP@\",%s}", inner);
	expect_open_error(spec, "not a regular file");
	snprintf(spec, sizeof spec, "{\"type\":\"crypt\",%s}", inner);
	expect_open_error(spec, "key-file or key-hex: required");
	snprintf(spec, sizeof spec,
	         "{\"type\":\"crypt\",\"key-file\":\"@TMP@/k64\",\"key-hex\":\"%s\",%s}", KEY2,
	         inner);
	expect_open_error(spec, "not both");
	snprintf(spec, sizeof spec, "{\"type\":\"crypt\",\"key-hex\":\"%.126s\",%s}", V10_KEY,
	         inner);
	expect_open_error(spec, "key-hex: 126 hex digits");
	char bad[129];
	memcpy(bad, KEY2, 129);
	bad[77] = 'g';
	snprintf(spec, sizeof spec, "{\"type\":\"crypt\",\"key-hex\":\"%s\",%s}", bad, inner);
	expect_open_error(spec, "key-hex: not a string of hexadecimal digits");
	memset(bad, 'a', 128);
	snprintf(spec, sizeof spec, "{\"type\":\"crypt\",\"key-hex\":\"%s\",%s}", bad, inner);
	expect_open_error(spec, "halves");
	snprintf(spec, sizeof spec,
	         "{\"type\":\"crypt\",\"cipher\":\"aes-cbc\",\"key-hex\":\"%s\",%s}", KEY2, inner);
	expect_open_error(spec, "cipher: 'aes-cbc'");
	snprintf(spec, sizeof spec,
	         "{\"type\":\"crypt\",\"implementation\":\"fast\",\"key-hex\":\"%s\",%s}", KEY2,
	         inner);
	expect_open_error(spec, "implementation: 'fast'");
	snprintf(spec, sizeof spec,
	         "{\"type\":\"crypt\",\"key-hex\":\"%s\",\"inner\":\"ram:size=7\"}", KEY2);
	expect_open_error(spec, "inner");

	/* a good key file; inspect shows no key */
	snprintf(spec, sizeof spec, "{\"type\":\"crypt\",\"key-file\":\"@TMP@/k64\",%s}", inner);
	struct vdisk *d = tu_open(spec, 0);
	vdisk_unref(d);
	snprintf(spec, sizeof spec, "{\"type\":\"crypt\",\"key-hex\":\"%s\",%s}", KEY2, inner);
	d = tu_open(spec, 0);
	char *ins = vdisk_inspect(d, VDISK_INSPECT_STATS);
	assert_non_null(ins);
	assert_null(strstr(ins, "0001020304"));
	assert_non_null(strstr(ins, "\"key-hex\":\"***\""));
	free(ins);
	vdisk_unref(d);
}

/* A decorator that ignores unmap, for the narrowing rule. */
static int ign_open(struct vdisk *d, json_t *cfg)
{
	struct vdisk *in = vdisk_open_child(d, json_object_get(cfg, "inner"), "inner", false);
	if (!in)
		return -1;
	vdisk_set_priv(d, in);
	vdisk_meta_inherit(d, in);
	vdisk_meta(d)->unmap = VDISK_UNMAP_IGNORED;
	return 0;
}
static int ign_fwd(struct vdisk_req *r)
{
	return vdisk_req_forward(r, vdisk_priv(r->disk));
}
static const struct vdisk_driver ign_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "ignunmap",
    .open = ign_open,
    .read = ign_fwd,
    .write = ign_fwd,
    .flush = ign_fwd,
};

static void test_unmap_zeroes_extents(void **state)
{
	(void)state;
	char *spec = crypt_spec("auto", KEY2, "\"ram:size=1M\"");
	struct vdisk *d = tu_open(spec, 0);
	free(spec);
	assert_int_equal(vdisk_unmap_behavior(d), VDISK_UNMAP_UNSPECIFIED);
	assert_false(vdisk_caps(d) & VDISK_CAP_FAST_ZERO);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(8192), *z = tu_alloc(8192);
	/* unwritten RAM is zeros below, noise here */
	assert_int_equal(tu_read(q, 0, buf, 512).kind, VDISK_OK);
	assert_memory_not_equal(buf, z, 512);
	struct vdisk_extent ext[8];
	unsigned n = 0;
	assert_int_equal(tu_extents(q, 0, 2048, ext, 8, &n).kind, VDISK_OK);
	assert_true(n >= 1);
	for (unsigned i = 0; i < n; i++)
		assert_false(ext[i].flags & VDISK_EXTENT_ZERO);
	/* write-zeroes writes encrypted zeros */
	tu_pattern(buf, 8192, 16, 512, 1);
	assert_int_equal(tu_write(q, 16, buf, 8192, 0).kind, VDISK_OK);
	assert_int_equal(tu_write_zeroes(q, 17, 14, VDISK_ZERO_MAY_UNMAP).kind, VDISK_OK);
	assert_int_equal(tu_write_zeroes(q, 17, 14, VDISK_ZERO_FAST_ONLY).kind,
	                 VDISK_ERR_NOT_SUPPORTED);
	assert_int_equal(tu_read(q, 16, buf, 8192).kind, VDISK_OK);
	assert_memory_equal(buf + 512, z, 14 * 512);
	assert_int_equal(tu_unmap(q, 16, 16).kind, VDISK_OK);
	vdisk_queue_destroy(q);
	vdisk_unref(d);

	if (vdisk_register_driver(&ign_driver) < 0)
		fail_msg("%s", vdisk_errmsg());
	spec = crypt_spec("auto", KEY2, "{\"type\":\"ignunmap\",\"inner\":\"ram:size=1M\"}");
	d = tu_open(spec, 0);
	free(spec);
	assert_int_equal(vdisk_unmap_behavior(d), VDISK_UNMAP_IGNORED);
	vdisk_unref(d);
	free(buf);
	free(z);
}

/* Errors from below keep their kind; FUA and the sector count come through. */
static void test_errors_and_metadata(void **state)
{
	(void)state;
	char *spec = crypt_spec(
	    "auto", KEY2,
	    "{\"type\":\"fault\",\"id\":\"f\",\"inner\":\"ram:size=1M,sector-size=4096\","
	    "\"rules\":[{\"op\":\"read\",\"nth\":1,\"error\":\"medium\"},"
	    "{\"op\":\"fua-write\",\"error\":\"reservation-conflict\"}]}");
	struct vdisk *d = tu_open(spec, 0);
	free(spec);
	assert_int_equal(vdisk_sector_size(d), 4096);
	assert_int_equal(vdisk_sector_count(d), 256);
	assert_true(vdisk_fua_respected(d));
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(4096), *orig = tu_alloc(4096);
	vdisk_status st = tu_read(q, 3, buf, 4096);
	assert_int_equal(st.kind, VDISK_ERR_MEDIUM);
	assert_int_equal(st.medium, VDISK_MEDIUM_UNRECOVERED_READ);
	tu_pattern(buf, 4096, 3, 4096, 9);
	memcpy(orig, buf, 4096);
	assert_int_equal(tu_write(q, 3, buf, 4096, VDISK_IO_FUA).kind,
	                 VDISK_ERR_RESERVATION_CONFLICT);
	assert_int_equal(tu_write(q, 3, buf, 4096, 0).kind, VDISK_OK);
	assert_memory_equal(buf, orig, 4096);
	memset(buf, 0, 4096);
	assert_int_equal(tu_read(q, 3, buf, 4096).kind, VDISK_OK);
	assert_memory_equal(buf, orig, 4096);
	assert_int_equal(tu_read(q, 256, buf, 4096).kind, VDISK_ERR_ILLEGAL_BLOCK);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
	free(orig);
}

struct bp {
	unsigned done, bad;
};
static void bp_done(void *o, vdisk_status st)
{
	struct bp *b = o;
	b->done++;
	b->bad += !vdisk_ok(st);
}

/* 48 MiB of writes in flight on one queue against a 16 MiB staging budget:
 * the core queues what does not fit and every write lands. */
static void test_staging_backpressure(void **state)
{
	(void)state;
	enum { N = 48, LEN = 1 << 20 };
	char *spec = crypt_spec("auto", KEY2, "\"ram:size=64M\"");
	struct vdisk *d = tu_open(spec, 0);
	free(spec);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *data = tu_alloc((size_t)N * LEN), *got = tu_alloc(LEN);
	struct iovec iov[N];
	struct bp b = {0};
	for (int i = 0; i < N; i++) {
		iov[i].iov_base = data + (size_t)i * LEN;
		iov[i].iov_len = LEN;
		tu_pattern(iov[i].iov_base, LEN, (uint64_t)i * 2048, 512, 5);
		assert_int_equal(vdisk_writev(q, (uint64_t)i * 2048, &iov[i], 1, 0, bp_done, &b),
		                 0);
	}
	while (vdisk_queue_inflight(q))
		vdisk_queue_wait(q, -1);
	assert_int_equal(b.done, N);
	assert_int_equal(b.bad, 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(tu_read(q, (uint64_t)i * 2048, got, LEN).kind, VDISK_OK);
		assert_memory_equal(got, iov[i].iov_base, LEN);
	}
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(data);
	free(got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ieee1619_vector10),
	    cmocka_unit_test(test_ieee1619_vectors_11_to_14),
	    cmocka_unit_test(test_implementations_agree),
	    cmocka_unit_test(test_sg_shapes),
	    cmocka_unit_test(test_keys),
	    cmocka_unit_test(test_unmap_zeroes_extents),
	    cmocka_unit_test(test_errors_and_metadata),
	    cmocka_unit_test(test_staging_backpressure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
