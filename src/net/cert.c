/*
 * cert.c — the cluster CA and node identities (OpenSSL 3).
 *
 * `syncstore init DIR` makes a self-signed CA and an admin client identity;
 * `syncstore cert issue` and first starts make one identity per node.  All
 * keys are ECDSA P-256, all signatures SHA-256.
 *
 *   certificate  subject                               extensions
 *   -----------  ------------------------------------  ---------------------------------
 *   ca.crt       CN=syncstore cluster CA               basicConstraints CA:TRUE (critical)
 *                                                      keyUsage keyCertSign,cRLSign (critical)
 *                                                      subjectKeyIdentifier
 *   <base>.crt   CN=<name>, OU=<role>, O=syncstore     basicConstraints CA:FALSE (critical)
 *                                                      keyUsage digitalSignature (critical)
 *                                                      extendedKeyUsage serverAuth,clientAuth
 *                                                      subject/authorityKeyIdentifier
 *
 * Serials are 16 random bytes (126 random bits: the top two are 01 so the
 * DER INTEGER is positive, always 16 bytes, never zero); validity starts an hour in the past (clock
 * skew between nodes) and lasts 10 years, never past the CA's own end.
 *
 * Files are never overwritten and never appear half-written: each is
 * written to a fresh temporary name created with O_EXCL (keys 0600 from the
 * start, so a key is never readable by others, not even briefly), fsynced,
 * then link()ed to its final name — link fails if the name exists, which
 * makes "refuse to overwrite" atomic even against a concurrent issuer.
 * write_file_atomic() is not used because rename() replaces silently.
 */
#include "tls.h"
#include "../util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define CERT_DAYS 3650
#define CERT_SKEW_SECS 3600
#define CERT_NAME_MAX 63 /* fits tls_peer.name with its NUL */
#define CA_CN "syncstore cluster CA"
#define CERT_ORG "syncstore"

static const char *const role_names[] = {
	[ROLE_NONE] = "none",
	[ROLE_SERVER] = "server",
	[ROLE_TRACKER] = "tracker",
	[ROLE_CLIENT] = "client",
};

const char *tls_role_name(tls_role r)
{
	if ((unsigned)r < ARRAY_LEN(role_names))
		return role_names[r];
	return "none";
}

tls_role tls_role_parse(const char *s)
{
	if (!s)
		return ROLE_NONE;
	for (unsigned i = ROLE_SERVER; i < ARRAY_LEN(role_names); i++)
		if (!strcmp(s, role_names[i]))
			return (tls_role)i;
	return ROLE_NONE;
}

int tls_fail(int code, const char *fmt, ...)
{
	char msg[384], reason[160] = "";
	unsigned long e, last = 0;
	va_list ap;

	/* The earliest queued error is usually the root cause; later ones are
	 * the layers that passed it up ("PEM lib", "system lib"). */
	while ((e = ERR_get_error()) != 0)
		if (!last)
			last = e;
	if (last) {
		const char *r = ERR_reason_error_string(last);
		if (r)
			snprintf(reason, sizeof reason, "%s", r);
		else
			snprintf(reason, sizeof reason, "openssl error %lx", last);
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (reason[0])
		return ss_fail(code, "%s: %s", msg, reason);
	return ss_fail(code, "%s", msg);
}

/* ---- small helpers ---- */

static int path2(char *out, const char *dir, const char *base, const char *ext)
{
	int n = snprintf(out, PATH_MAX, "%s/%s%s", dir, base, ext);
	if (n < 0 || n >= PATH_MAX)
		return ss_fail(SS_ETOOBIG, "path too long: %s/%s%s", dir, base, ext);
	return 0;
}

static bool file_exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* Refuse early, before generating anything, so a refused init or issue
 * leaves no stray files behind. */
static int refuse_existing(const char *path)
{
	if (file_exists(path))
		return ss_fail(SS_EEXIST, "%s already exists: refusing to overwrite", path);
	return 0;
}

/*
 * Write a new file at path with the given mode, atomically and only if the
 * name is free.  The temporary name is random, so concurrent writers never
 * share one, and O_EXCL creates it with `mode` from the start.
 */
static int write_new_file(const char *path, const void *p, size_t n, int mode)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	int fd = -1, rc = 0;

	for (int tries = 0; fd < 0; tries++) {
		uint8_t r[6];
		char hex[13];
		if (RAND_bytes(r, sizeof r) != 1)
			return tls_fail(SS_EIO, "cannot get random bytes");
		hex_encode(r, sizeof r, hex);
		if (snprintf(tmp, sizeof tmp, "%s.tmp-%s", path, hex) >= (int)sizeof tmp)
			return ss_fail(SS_ETOOBIG, "path too long: %s", path);
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
		if (fd < 0 && (errno != EEXIST || tries > 8))
			return ss_fail_errno("cannot create %s", tmp);
	}
	for (const uint8_t *q = p; n && !rc;) {
		ssize_t w = write(fd, q, n);
		if (w < 0 && errno != EINTR)
			rc = ss_fail_errno("cannot write %s", tmp);
		if (w > 0) {
			q += w;
			n -= (size_t)w;
		}
	}
	if (!rc && fsync(fd) < 0)
		rc = ss_fail_errno("cannot fsync %s", tmp);
	if (close(fd) < 0 && !rc)
		rc = ss_fail_errno("cannot close %s", tmp);
	if (!rc && link(tmp, path) < 0) {
		if (errno == EEXIST)
			rc = ss_fail(SS_EEXIST, "%s already exists: refusing to overwrite", path);
		else
			rc = ss_fail_errno("cannot create %s", path);
	}
	unlink(tmp);
	if (rc)
		return rc;
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		dir[1] = 0;
	else if (slash)
		*slash = 0;
	else
		strcpy(dir, ".");
	return fsync_dir(dir);
}

/* PEM of a certificate or key in memory, then write_new_file.  Key PEM goes
 * through a secure-memory BIO so it is wiped when freed. */
static int write_pem(const char *path, X509 *x, EVP_PKEY *key)
{
	BIO *b = BIO_new(key ? BIO_s_secmem() : BIO_s_mem());
	char *data;
	long n;
	int rc;

	if (!b)
		return tls_fail(SS_ENOMEM, "cannot allocate a memory bio");
	if (key ? !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) : !PEM_write_bio_X509(b, x)) {
		BIO_free(b);
		return tls_fail(SS_ETLS, "cannot encode %s", path);
	}
	n = BIO_get_mem_data(b, &data);
	rc = write_new_file(path, data, (size_t)n, key ? 0600 : 0644);
	BIO_free(b);
	return rc;
}

static int load_cert(const char *path, X509 **out)
{
	BIO *b = BIO_new_file(path, "r");
	if (!b) {
		int e = errno;
		ERR_clear_error();
		errno = e;
		return ss_fail_errno("cannot open certificate %s", path);
	}
	*out = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	if (!*out)
		return tls_fail(SS_ETLS, "cannot read certificate %s", path);
	return 0;
}

static int load_key(const char *path, EVP_PKEY **out)
{
	BIO *b = BIO_new_file(path, "r");
	if (!b) {
		int e = errno;
		ERR_clear_error();
		errno = e;
		return ss_fail_errno("cannot open key %s", path);
	}
	*out = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	if (!*out)
		return tls_fail(SS_ETLS, "cannot read key %s", path);
	return 0;
}

static int new_key(EVP_PKEY **out)
{
	*out = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!*out)
		return tls_fail(SS_ETLS, "cannot generate a P-256 key");
	return 0;
}

static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
	if (!ext)
		return tls_fail(SS_ETLS, "cannot make extension %s=%s", OBJ_nid2sn(nid), value);
	int ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	if (!ok)
		return tls_fail(SS_ETLS, "cannot add extension %s", OBJ_nid2sn(nid));
	return 0;
}

static int name_add(X509_NAME *nm, int nid, const char *value)
{
	if (!X509_NAME_add_entry_by_NID(nm, nid, MBSTRING_UTF8, (const unsigned char *)value, -1, -1, 0))
		return tls_fail(SS_ETLS, "cannot set %s=%s", OBJ_nid2sn(nid), value);
	return 0;
}

/*
 * A new certificate for `key` with subject (cn, ou), signed by ca/ca_key;
 * ca == NULL makes the self-signed CA.
 */
static int make_cert(EVP_PKEY *key, const char *cn, const char *ou, X509 *ca, EVP_PKEY *ca_key, X509 **out)
{
	X509 *x = X509_new();
	X509_NAME *nm = X509_NAME_new();
	BIGNUM *serial = NULL;
	uint8_t rnd[16];
	X509V3_CTX v3;
	int rc = SS_ETLS;

	*out = NULL;
	if (!x || !nm) {
		rc = tls_fail(SS_ENOMEM, "cannot allocate a certificate");
		goto out;
	}
	/* Top bits 01: positive in DER, always 16 bytes long, never zero. */
	if (RAND_bytes(rnd, sizeof rnd) != 1) {
		rc = tls_fail(SS_EIO, "cannot get random bytes");
		goto out;
	}
	rnd[0] = (uint8_t)((rnd[0] & 0x7f) | 0x40);
	if (!(serial = BN_bin2bn(rnd, sizeof rnd, NULL)) || !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) ||
	    !X509_set_version(x, X509_VERSION_3)) {
		rc = tls_fail(SS_ETLS, "cannot set certificate serial");
		goto out;
	}
	if (ca) {
		if ((rc = name_add(nm, NID_organizationName, CERT_ORG)) || (rc = name_add(nm, NID_organizationalUnitName, ou)) ||
		    (rc = name_add(nm, NID_commonName, cn)))
			goto out;
	} else if ((rc = name_add(nm, NID_commonName, cn))) {
		goto out;
	}
	if (!X509_set_subject_name(x, nm) || !X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : nm) ||
	    !X509_set_pubkey(x, key) || !X509_gmtime_adj(X509_getm_notBefore(x), -CERT_SKEW_SECS) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), CERT_DAYS, 0, NULL)) {
		rc = tls_fail(SS_ETLS, "cannot fill certificate for %s", cn);
		goto out;
	}
	/* A leaf that outlives its CA would only fail later, confusingly. */
	if (ca && ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(ca)) > 0 &&
	    !X509_set1_notAfter(x, X509_get0_notAfter(ca))) {
		rc = tls_fail(SS_ETLS, "cannot fill certificate for %s", cn);
		goto out;
	}
	X509V3_set_ctx(&v3, ca ? ca : x, x, NULL, NULL, 0);
	if (ca) {
		if ((rc = add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE")) ||
		    (rc = add_ext(x, &v3, NID_key_usage, "critical,digitalSignature")) ||
		    (rc = add_ext(x, &v3, NID_ext_key_usage, "serverAuth,clientAuth")) ||
		    (rc = add_ext(x, &v3, NID_subject_key_identifier, "hash")) ||
		    (rc = add_ext(x, &v3, NID_authority_key_identifier, "keyid:always")))
			goto out;
	} else {
		if ((rc = add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE")) ||
		    (rc = add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign")) ||
		    (rc = add_ext(x, &v3, NID_subject_key_identifier, "hash")))
			goto out;
	}
	if (!X509_sign(x, ca ? ca_key : key, EVP_sha256())) {
		rc = tls_fail(SS_ETLS, "cannot sign certificate for %s", cn);
		goto out;
	}
	*out = x;
	x = NULL;
	rc = 0;
out:
	BN_free(serial);
	X509_NAME_free(nm);
	X509_free(x);
	return rc;
}

/* Names end up in certificates, logs and messages: printable ASCII only. */
static int check_name(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > CERT_NAME_MAX)
		return ss_fail(SS_EINVAL, "invalid identity name \"%s\": must be 1 to %d characters", name ? name : "",
			       CERT_NAME_MAX);
	for (size_t i = 0; i < n; i++)
		if (name[i] < 0x20 || name[i] > 0x7e)
			return ss_fail(SS_EINVAL, "invalid identity name \"%s\": only printable ascii is allowed", name);
	return 0;
}

static int check_base(const char *base)
{
	if (!base || !base[0] || strchr(base, '/') || !strcmp(base, ".") || !strcmp(base, ".."))
		return ss_fail(SS_EINVAL, "invalid identity file name \"%s\"", base ? base : "");
	return 0;
}

/* Issue with an already loaded CA: the shared tail of init and issue. */
static int issue_with(X509 *ca, EVP_PKEY *ca_key, tls_role role, const char *name, const char *outdir,
		      const char *base)
{
	char crt[PATH_MAX], keyp[PATH_MAX];
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	int rc;

	if (role == ROLE_NONE || (unsigned)role >= ARRAY_LEN(role_names))
		return ss_fail(SS_EINVAL, "invalid role: must be server, tracker or client");
	if ((rc = check_name(name)) || (rc = check_base(base)))
		return rc;
	if ((rc = path2(crt, outdir, base, ".crt")) || (rc = path2(keyp, outdir, base, ".key")))
		return rc;
	if ((rc = mkdir_p(outdir, 0700)) || (rc = refuse_existing(keyp)) || (rc = refuse_existing(crt)))
		return rc;
	if ((rc = new_key(&key)) || (rc = make_cert(key, name, tls_role_name(role), ca, ca_key, &x)))
		goto out;
	/* Key first: a certificate on disk always has its key beside it. */
	if ((rc = write_pem(keyp, NULL, key)))
		goto out;
	if ((rc = write_pem(crt, x, NULL))) {
		unlink(keyp);
		goto out;
	}
out:
	X509_free(x);
	EVP_PKEY_free(key);
	return rc;
}

int tls_init_dir(const char *dir)
{
	char ca_crt[PATH_MAX], ca_key[PATH_MAX], cl_crt[PATH_MAX], cl_key[PATH_MAX];
	EVP_PKEY *key = NULL;
	X509 *ca = NULL;
	int rc;

	if ((rc = path2(ca_crt, dir, "ca", ".crt")) || (rc = path2(ca_key, dir, "ca", ".key")) ||
	    (rc = path2(cl_crt, dir, "client", ".crt")) || (rc = path2(cl_key, dir, "client", ".key")))
		return rc;
	if ((rc = mkdir_p(dir, 0700)))
		return rc;
	if ((rc = refuse_existing(ca_key)) || (rc = refuse_existing(ca_crt)) || (rc = refuse_existing(cl_key)) ||
	    (rc = refuse_existing(cl_crt)))
		return rc;
	if ((rc = new_key(&key)) || (rc = make_cert(key, CA_CN, NULL, NULL, NULL, &ca)))
		goto out;
	if ((rc = write_pem(ca_key, NULL, key)))
		goto out;
	if ((rc = write_pem(ca_crt, ca, NULL))) {
		unlink(ca_key);
		goto out;
	}
	rc = issue_with(ca, key, ROLE_CLIENT, "admin", dir, "client");
out:
	X509_free(ca);
	EVP_PKEY_free(key);
	return rc;
}

int tls_issue(const char *ca_dir, tls_role role, const char *name, const char *outdir, const char *base)
{
	char ca_crt[PATH_MAX], ca_keyp[PATH_MAX];
	EVP_PKEY *ca_key = NULL;
	X509 *ca = NULL;
	int rc;

	if ((rc = path2(ca_crt, ca_dir, "ca", ".crt")) || (rc = path2(ca_keyp, ca_dir, "ca", ".key")))
		return rc;
	if (!file_exists(ca_keyp))
		return ss_fail(SS_ENOENT, "%s not found: the CA key is needed to issue identities", ca_keyp);
	if ((rc = load_cert(ca_crt, &ca)) || (rc = load_key(ca_keyp, &ca_key)))
		goto out;
	if (X509_check_private_key(ca, ca_key) != 1) {
		rc = tls_fail(SS_ETLS, "%s does not match %s", ca_keyp, ca_crt);
		goto out;
	}
	rc = issue_with(ca, ca_key, role, name, outdir, base);
out:
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	return rc;
}

/* Quote a path for a shell command line only when it needs it, so the
 * suggested command can be pasted as is. */
static void shell_quote(const char *s, char *out, size_t outsz)
{
	size_t n = 0;
	bool plain = s[0] != 0;
	for (const char *p = s; *p; p++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-:@+=,", *p))
			plain = false;
	if (plain) {
		snprintf(out, outsz, "%s", s);
		return;
	}
	if (outsz < 3) {
		out[0] = 0;
		return;
	}
	out[n++] = '\'';
	for (const char *p = s; *p && n + 6 < outsz; p++) {
		if (*p == '\'') {
			memcpy(out + n, "'\\''", 4);
			n += 4;
		} else {
			out[n++] = *p;
		}
	}
	out[n++] = '\'';
	out[n] = 0;
}

/*
 * Look in idir for exactly one NAME.crt with NAME.key of the wanted role
 * (other .crt files, like a copied ca.crt, are not identities).  0 and the
 * paths when found; 1 when there is none; an error when there are several.
 */
static int find_identity(const char *idir, tls_role role, char *crt_path, char *key_path)
{
	DIR *d = opendir(idir);
	if (!d)
		return 1;
	int found = 0, rc = 0;
	struct dirent *e;
	while ((e = readdir(d)) && !rc) {
		size_t n = strlen(e->d_name);
		if (n < 5 || n > NAME_MAX || strcmp(e->d_name + n - 4, ".crt"))
			continue;
		char crt[PATH_MAX], key[PATH_MAX], base[NAME_MAX + 1];
		snprintf(base, sizeof base, "%.*s", (int)(n - 4), e->d_name);
		if (path2(crt, idir, base, ".crt") || path2(key, idir, base, ".key") || !file_exists(key))
			continue;
		tls_peer info;
		if (tls_cert_info(crt, &info) || info.role != role)
			continue;
		if (found++)
			rc = ss_fail(SS_EINVAL, "several %s identities in %s (%s and %s): keep one", tls_role_name(role),
				     idir, crt_path, crt);
		snprintf(crt_path, PATH_MAX, "%s", crt);
		snprintf(key_path, PATH_MAX, "%s", key);
	}
	closedir(d);
	return rc ? rc : found ? 0 : 1;
}

int tls_identity(const char *ca_dir, const char *idir, const char *base, tls_role role, const char *name,
		 char *crt_path, char *key_path)
{
	char ca_keyp[PATH_MAX];
	int rc;

	if ((rc = check_base(base)) || (rc = path2(crt_path, idir, base, ".crt")) ||
	    (rc = path2(key_path, idir, base, ".key")) || (rc = path2(ca_keyp, ca_dir, "ca", ".key")))
		return rc;
	bool have_crt = file_exists(crt_path), have_key = file_exists(key_path);
	if (have_crt && have_key) {
		/* A node started with another role's identity would only be
		 * refused later by its peers, with a vaguer message. */
		tls_peer info;
		if ((rc = tls_cert_info(crt_path, &info)))
			return rc;
		if (role != ROLE_NONE && info.role != role)
			return ss_fail(SS_EAUTH, "%s is a %s identity, not a %s one", crt_path, tls_role_name(info.role),
				       tls_role_name(role));
		return 0;
	}
	if (have_crt != have_key)
		return ss_fail(SS_ENOENT, "%s exists without %s: remove it to issue a new identity",
			       have_crt ? crt_path : key_path, have_crt ? key_path : crt_path);
	/* An identity issued by `cert issue --out IDIR` carries its own name. */
	if ((rc = find_identity(idir, role, crt_path, key_path)) <= 0)
		return rc;
	if ((rc = path2(crt_path, idir, base, ".crt")) || (rc = path2(key_path, idir, base, ".key")))
		return rc;
	if (!file_exists(ca_keyp)) {
		char qd[PATH_MAX + 8], qn[2 * CERT_NAME_MAX + 8];
		shell_quote(idir, qd, sizeof qd);
		shell_quote(name ? name : "NAME", qn, sizeof qn);
		return ss_fail(SS_ENOENT,
			       "no identity in %s and no CA key in %s: issue one with the CA key, "
			       "`syncstore cert issue --tls CA_DIR --role %s --name %s --out %s`",
			       idir, ca_dir, tls_role_name(role), qn, qd);
	}
	return tls_issue(ca_dir, role, name, idir, base);
}

/* ---- reading certificates ---- */

/* UTF-8 text of the only entry `nid` in a name; -1 if absent or repeated
 * (a repeated OU would make the role ambiguous). */
static int name_entry(const X509_NAME *nm, int nid, char *out, size_t outsz)
{
	int i = X509_NAME_get_index_by_NID(nm, nid, -1);
	unsigned char *utf8 = NULL;
	if (i < 0 || X509_NAME_get_index_by_NID(nm, nid, i) >= 0)
		return -1;
	int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(nm, i)));
	if (n < 0) {
		ERR_clear_error();
		return -1;
	}
	size_t len = MIN((size_t)n, outsz - 1);
	/* Do not cut a multi-byte character in half. */
	if (len < (size_t)n)
		while (len > 0 && (utf8[len] & 0xc0) == 0x80)
			len--;
	memcpy(out, utf8, len);
	out[len] = 0;
	OPENSSL_free(utf8);
	/* Names go into logs: no control characters, no embedded NUL. */
	for (size_t k = 0; k < len; k++)
		if ((unsigned char)out[k] < 0x20 || out[k] == 0x7f)
			out[k] = '?';
	return 0;
}

int tls_x509_info(X509 *x, tls_peer *out)
{
	const X509_NAME *nm = X509_get_subject_name(x);
	unsigned char *der = NULL;
	char ou[16];

	memset(out, 0, sizeof *out);
	int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
	if (n <= 0)
		return tls_fail(SS_ETLS, "cannot encode a certificate's public key");
	sha256(der, (size_t)n, out->id);
	OPENSSL_free(der);
	out->role = name_entry(nm, NID_organizationalUnitName, ou, sizeof ou) ? ROLE_NONE : tls_role_parse(ou);
	if (name_entry(nm, NID_commonName, out->name, sizeof out->name))
		out->name[0] = 0;
	return 0;
}

int tls_cert_info(const char *crt_path, tls_peer *out)
{
	X509 *x;
	int rc = load_cert(crt_path, &x);
	if (rc)
		return rc;
	rc = tls_x509_info(x, out);
	X509_free(x);
	return rc;
}

int tls_cert_id(const char *crt_path, uint8_t id[HASH_LEN])
{
	tls_peer info;
	int rc = tls_cert_info(crt_path, &info);
	if (!rc)
		memcpy(id, info.id, HASH_LEN);
	return rc;
}
