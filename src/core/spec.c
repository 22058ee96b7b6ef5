/* Spec strings -> JSON objects, and the typed readers of configuration values.
 *
 * One syntax everywhere: JSON, @file.json, the `type:key=value,...` shorthand,
 * or a bare path whose format is probed.  Values keep their JSON type when given
 * as JSON and are strings from the shorthand; the readers accept both. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define SPEC_FILE_MAX (16u << 20)

static bool is_type_name(const char *s, size_t n)
{
	if (n == 0 || n > 32 || !islower((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]))
			return false;
	return true;
}

/* text is len bytes: a file may hold a NUL, where a C string would end */
static json_t *parse_json_text(const char *text, size_t len, const char *where)
{
	json_error_t err;
	json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
	if (!v) {
		vdisk_set_error("%s: invalid JSON at line %d column %d: %s", where, err.line,
		                err.column, err.text);
		return NULL;
	}
	if (!json_is_object(v)) {
		json_decref(v);
		vdisk_set_error("%s: a JSON spec must be an object with a \"type\"", where);
		return NULL;
	}
	return v;
}

static json_t *parse_spec_file(const char *file)
{
	json_t *v = NULL;
	char *text = NULL;
	struct stat st;
	/* O_NONBLOCK: opening a FIFO for reading would wait for a writer */
	int fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		vdisk_set_error_errno(errno, "spec file '%s'", file);
		goto out;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > SPEC_FILE_MAX) {
		vdisk_set_error("spec file '%s': not a regular file of at most 16 MiB", file);
		goto out;
	}
	text = malloc((size_t)st.st_size + 1);
	if (!text) {
		vdisk_set_error_errno(ENOMEM, "spec file '%s'", file);
		goto out;
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, text + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			vdisk_set_error_errno(n < 0 ? errno : EIO, "spec file '%s': read", file);
			goto out;
		}
		got += (size_t)n;
	}
	text[got] = '\0';
	{
		char where[PATH_MAX + 32];
		snprintf(where, sizeof where, "spec file '%s'", file);
		v = parse_json_text(text, got, where);
	}
out:
	free(text);
	if (fd >= 0)
		close(fd);
	return v;
}

/* type:key=value,key=value — a backslash escapes the next character, so values
 * may hold commas (file:path=a\,b.img). */
static json_t *parse_shorthand(const char *spec, size_t typelen)
{
	json_t *obj = json_object();
	char *buf = NULL;
	if (!obj)
		goto nomem;
	char type[33];
	memcpy(type, spec, typelen);
	type[typelen] = '\0';
	json_object_set_new(obj, "type", json_string(type));

	const char *p = spec + typelen + 1;
	buf = malloc(strlen(p) + 1);
	if (!buf)
		goto nomem;
	while (*p) {
		/* one item: key=value */
		size_t n = 0;
		const char *eq = NULL;
		size_t eqpos = 0;
		while (*p && *p != ',') {
			if (*p == '\\' && p[1]) {
				p++;
				buf[n++] = *p++;
				continue;
			}
			if (*p == '=' && !eq) {
				eq = p;
				eqpos = n;
			}
			buf[n++] = *p++;
		}
		buf[n] = '\0';
		if (*p == ',')
			p++;
		if (n == 0)
			continue;
		if (!eq) {
			vdisk_set_error("spec '%s': item '%s' is not key=value", spec, buf);
			goto fail;
		}
		buf[eqpos] = '\0';
		const char *key = buf, *val = buf + eqpos + 1;
		if (!*key) {
			vdisk_set_error("spec '%s': empty key", spec);
			goto fail;
		}
		if (json_object_get(obj, key)) {
			vdisk_set_error("spec '%s': key '%s' given twice", spec, key);
			goto fail;
		}
		/* a value need not be UTF-8: a path is any bytes */
		json_object_set_new(obj, key, json_stringn_nocheck(val, strlen(val)));
	}
	free(buf);
	return obj;
nomem:
	vdisk_set_error_errno(ENOMEM, "spec");
fail:
	free(buf);
	json_decref(obj);
	return NULL;
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Probe a bare path: "file" for raw data, or the name of the format whose
 * signature it carries.  A writable open of an image that carries a signature
 * is refused by the caller: a guest that wrote those bytes into a raw disk must
 * not change how the host opens it next time. */
int vd_probe_path(const char *file, bool read_only, const char **type)
{
	unsigned char head[512], tail[512];
	struct stat st;
	int rc = -1;
	int fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO: no wait */
	(void)read_only;
	*type = "file";
	if (fd < 0)
		return vdisk_set_error_errno(errno, "'%s'", file);
	if (fstat(fd, &st) < 0) {
		vdisk_set_error_errno(errno, "'%s': stat", file);
		goto out;
	}
	if (S_ISBLK(st.st_mode))
		*type = vd_driver_find("blockdev") ? "blockdev" : "file";
	else if (!S_ISREG(st.st_mode)) {
		vdisk_set_error("'%s': not a regular file or block device", file);
		goto out;
	}
	ssize_t n = pread(fd, head, sizeof head, 0);
	if (n == (ssize_t)sizeof head && memcmp(head, "vhdxfile", 8) == 0)
		*type = "vhdx";
	else if (n == (ssize_t)sizeof head && memcmp(head, "conectix", 8) == 0 &&
	         be32(head + 60) != 2)
		*type = "vhd"; /* dynamic or differencing VHD: a copy of the footer at 0 */
	else if (S_ISREG(st.st_mode) && st.st_size >= 1024 && st.st_size % 512 == 0 &&
	         pread(fd, tail, sizeof tail, st.st_size - 512) == (ssize_t)sizeof tail &&
	         memcmp(tail, "conectix", 8) == 0)
		*type = be32(tail + 60) == 2 ? "vhd1" : "vhd";
	rc = 0;
out:
	close(fd);
	return rc;
}

json_t *vd_spec_parse(const char *spec, const char *path)
{
	const char *where = path && *path ? path : "spec";
	if (!spec || !*spec) {
		vdisk_set_error("%s: empty spec", where);
		return NULL;
	}
	while (isspace((unsigned char)*spec))
		spec++;
	if (*spec == '{')
		return parse_json_text(spec, strlen(spec), where);
	if (*spec == '@')
		return parse_spec_file(spec + 1);

	const char *colon = strchr(spec, ':');
	if (colon && is_type_name(spec, (size_t)(colon - spec))) {
		/* A file literally named like "ram:x" wins only if it exists. */
		struct stat st;
		if (stat(spec, &st) != 0)
			return parse_shorthand(spec, (size_t)(colon - spec));
	}

	/* A bare path: probed later, when the read-only flag is known. */
	json_t *obj = json_object();
	if (!obj) {
		vdisk_set_error_errno(ENOMEM, "spec");
		return NULL;
	}
	json_object_set_new(obj, "type", json_string("?probe"));
	json_object_set_new(obj, "path", json_stringn_nocheck(spec, strlen(spec)));
	return obj;
}

/* ------------------------------------------------------------------------- */
/* Value parsers                                                               */
/* ------------------------------------------------------------------------- */

VD_EXPORT int vdisk_parse_size(const char *s, uint64_t *out)
{
	char *end;
	if (!s || !isdigit((unsigned char)*s))
		return errno = EINVAL, -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno == ERANGE) {
		/* too many digits; still tell a size from something else */
		while (isdigit((unsigned char)*end))
			end++;
		if (*end == '\0' || strchr("bBkKmMgGtTpPeE", *end))
			return errno = ERANGE, -1;
		return errno = EINVAL, -1;
	}
	if (errno)
		return -1;
	unsigned shift = 0;
	switch (*end) {
	case '\0': break;
	case 'b':
	case 'B':
		shift = 0;
		end++;
		break;
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	case 't':
	case 'T':
		shift = 40;
		end++;
		break;
	case 'p':
	case 'P':
		shift = 50;
		end++;
		break;
	case 'e':
	case 'E':
		shift = 60;
		end++;
		break;
	default: return errno = EINVAL, -1;
	}
	if (shift && (strcmp(end, "iB") == 0 || strcmp(end, "ib") == 0))
		end += 2;
	else if (shift && (*end == 'B' || *end == 'b'))
		end++;
	if (*end)
		return errno = EINVAL, -1;
	if (shift && v > (UINT64_MAX >> shift))
		return errno = ERANGE, -1;
	*out = (uint64_t)v << shift;
	return 0;
}

VD_EXPORT int vdisk_parse_duration(const char *s, uint64_t *ns)
{
	char *end;
	if (!s || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	uint64_t mul;
	if (*end == '\0')
		mul = v == 0 ? 1 : 0; /* only 0 may go without a unit */
	else if (strcmp(end, "ns") == 0)
		mul = 1;
	else if (strcmp(end, "us") == 0)
		mul = 1000;
	else if (strcmp(end, "ms") == 0)
		mul = 1000000;
	else if (strcmp(end, "s") == 0)
		mul = 1000000000;
	else
		return -1;
	if (mul == 0 || (v && mul > UINT64_MAX / v))
		return -1;
	*ns = (uint64_t)v * mul;
	return 0;
}

VD_EXPORT int vdisk_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"true", "on", "yes", "1"};
	static const char *const no[] = {"false", "off", "no", "0"};
	if (!s)
		return -1;
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

static int hex_digit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

VD_EXPORT int vdisk_parse_hex(const char *s, void *out, size_t len)
{
	unsigned char *o = out;
	if (!s || strlen(s) != 2 * len)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int a = hex_digit(s[2 * i]), b = hex_digit(s[2 * i + 1]);
		if (a < 0 || b < 0)
			return -1;
		o[i] = (unsigned char)(a << 4 | b);
	}
	return 0;
}

VD_EXPORT int vdisk_cfg_check(json_t *cfg, const char *const *allowed)
{
	const char *key;
	json_t *v;
	json_object_foreach (cfg, key, v) {
		bool ok = false;
		for (size_t i = 0; allowed && allowed[i]; i++)
			if (strcmp(key, allowed[i]) == 0)
				ok = true;
		if (!ok) {
			char list[512] = "";
			size_t n = 0;
			for (size_t i = 0; allowed && allowed[i] && n < sizeof list - 40; i++)
				n += (size_t)snprintf(list + n, sizeof list - n, "%s%s",
				                      i ? ", " : "", allowed[i]);
			return vdisk_set_error("unknown key '%s' (known: %s)", key,
			                       n ? list : "none");
		}
	}
	return 0;
}

VD_EXPORT int vdisk_cfg_size(json_t *cfg, const char *key, uint64_t *out)
{
	json_t *v = json_object_get(cfg, key);
	if (!v)
		return 0;
	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0)
			return vdisk_set_error("%s: %" JSON_INTEGER_FORMAT " is negative", key,
			                       json_integer_value(v));
		*out = (uint64_t)json_integer_value(v);
		return 1;
	}
	if (json_is_real(v) && json_real_value(v) >= 9.2e18)
		return vdisk_set_error("%s: %g is too large (a size is at most 8 EiB - 1)", key,
		                       json_real_value(v));
	if (json_is_string(v) && vdisk_parse_size(json_string_value(v), out) == 0) {
		/* no disk, offset or length of the contract goes beyond INT64_MAX */
		if (*out > (uint64_t)INT64_MAX)
			return vdisk_set_error(
			    "%s: '%s' is too large (a size is at most 8 EiB - 1)", key,
			    json_string_value(v));
		return 1;
	}
	if (json_is_string(v) && errno == ERANGE)
		return vdisk_set_error("%s: '%s' is too large (a size is at most 8 EiB - 1)", key,
		                       json_string_value(v));
	if (json_is_string(v))
		return vdisk_set_error("%s: '%s' is not a size (examples: 512, 4k, 1M, 2G, 1T)",
		                       key, json_string_value(v));
	return vdisk_set_error("%s: expected a size (a number or a string like \"1G\")", key);
}

VD_EXPORT int vdisk_cfg_uint(json_t *cfg, const char *key, uint64_t *out)
{
	json_t *v = json_object_get(cfg, key);
	if (!v)
		return 0;
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*out = (uint64_t)json_integer_value(v);
		return 1;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;
		errno = 0;
		unsigned long long x = strtoull(s, &end, 0);
		if (isdigit((unsigned char)*s) && !*end && !errno) {
			*out = x;
			return 1;
		}
		return vdisk_set_error("%s: '%s' is not a non-negative integer", key, s);
	}
	return vdisk_set_error("%s: expected a non-negative integer", key);
}

VD_EXPORT int vdisk_cfg_duration(json_t *cfg, const char *key, uint64_t *ns)
{
	json_t *v = json_object_get(cfg, key);
	if (!v)
		return 0;
	if (json_is_integer(v) && json_integer_value(v) == 0) {
		*ns = 0;
		return 1;
	}
	if (json_is_string(v) && vdisk_parse_duration(json_string_value(v), ns) == 0)
		return 1;
	if (json_is_string(v))
		return vdisk_set_error("%s: '%s' is not a duration (examples: 0, 250us, 2ms, 1s)",
		                       key, json_string_value(v));
	return vdisk_set_error("%s: expected a duration string like \"2ms\"", key);
}

VD_EXPORT int vdisk_cfg_bool(json_t *cfg, const char *key, bool *out)
{
	json_t *v = json_object_get(cfg, key);
	if (!v)
		return 0;
	if (json_is_boolean(v)) {
		*out = json_is_true(v);
		return 1;
	}
	if (json_is_string(v) && vdisk_parse_bool(json_string_value(v), out) == 0)
		return 1;
	if (json_is_string(v))
		return vdisk_set_error("%s: '%s' is not a boolean (true/false/on/off)", key,
		                       json_string_value(v));
	return vdisk_set_error("%s: expected a boolean", key);
}

VD_EXPORT int vdisk_cfg_string(json_t *cfg, const char *key, const char **out)
{
	json_t *v = json_object_get(cfg, key);
	if (!v)
		return 0;
	if (!json_is_string(v))
		return vdisk_set_error("%s: expected a string", key);
	*out = json_string_value(v);
	return 1;
}
