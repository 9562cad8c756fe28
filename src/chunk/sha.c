/* sha.c — SHA-256 through OpenSSL's EVP interface (SHA-NI accelerated). */
#include "chunk.h"
#include "../util/util.h"

#include <openssl/evp.h>

void sha256(const void *p, size_t n, uint8_t out[HASH_LEN])
{
	unsigned int len = HASH_LEN;
	/* EVP_Digest fetches the implementation each call; the cost is noise
	 * next to hashing 32 KiB, and it keeps this function thread-safe. */
	if (!EVP_Digest(p, n, out, &len, EVP_sha256(), NULL))
		ss_assert_fail("EVP_Digest(sha256)", __FILE__, __LINE__);
}
