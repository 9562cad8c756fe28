/*
 * fastcdc.c — content-defined chunking: FastCDC with normalized chunking.
 *
 * What it does: cdc_cut() returns the length of the next chunk of a buffer.
 * A 64-bit gear hash rolls over the bytes, h = (h << 1) + cdc_gear[byte];
 * each shift pushes old bytes out of the top, so h after byte i depends on
 * exactly the 64 bytes i-63..i.  A cut is placed after byte i when the
 * masked bits of h are all zero.
 *
 * Format (version CDC_FORMAT_VERSION; changing anything here changes every
 * chunk id, see chunk.h):
 *
 *   item         value
 *   -----------  ------------------------------------------------------------
 *   gear table   cdc_gear[k] = k+1'th output of SplitMix64 seeded with
 *                CDC_GEAR_SEED (the literal table below; the unit test
 *                regenerates it)
 *   hash         h = (h << 1) + cdc_gear[b], mod 2^64, starting from h = 0
 *                at offset CDC_MIN - 64, so every tested h covers a full
 *                64-byte window and depends on nothing but that window
 *   mask         the HIGH bits of h, not the paper's spread masks: with a
 *                left-shifting hash the high bits are the ones that have
 *                seen the whole window (bit k depends on the last k+1
 *                bytes).  Before CDC_AVG: top 17 bits (h < 2^47);
 *                from CDC_AVG on: top 13 bits (h < 2^51).  "NC level 2".
 *   cut          after byte i (chunk length i+1) for the first i in
 *                [CDC_MIN, CDC_MAX) whose h passes the mask for its region;
 *                else CDC_MAX; a shorter tail of the input is one chunk
 *   sizes        so chunk lengths are in (CDC_MIN, CDC_MAX], except the
 *                last chunk of a file, which may be shorter; mean ≈ 37 KiB
 *
 * Costs: about one cycle per byte from CDC_MIN - 64 to the cut point (the
 * first CDC_MIN - 64 bytes are skipped), ~3.8 GB/s here built with gcc -O2.
 * The loop is bound by the hash's dependency chain and by instruction
 * throughput (byte load, table load, lea, compare+branch per byte); gcc
 * turns the step into a single lea, so the chain is one cycle per byte.
 * Testing h against a limit instead of masking saves an instruction.
 * clang 14 emits shift+add instead of lea for the same source and runs at
 * about half the speed; the project builds with cc (gcc).
 *
 * Limits: stateless and pure, so streaming equals whole-buffer chunking as
 * long as the caller passes CDC_MAX bytes whenever the data has them.
 */
#include "chunk.h"

/* Cuts test "top bits zero" as h < limit; same as !(h & mask). */
#define CDC_LIMIT_S (1ULL << (64 - 17))  /* before CDC_AVG: 1 in 128 KiB */
#define CDC_LIMIT_L (1ULL << (64 - 13))  /* after CDC_AVG: 1 in 8 KiB */
#define CDC_WINDOW 64

const uint64_t cdc_gear[256] = {
	0x81c396b15f54c865, 0xaed5a3620671cb56, 0x1624dd7ff14b02b3,
	0x171480447b3bad31, 0xf35521d9b89a2edd, 0xa267022b59d45a35,
	0x42897dae0fbb7651, 0xd03da3b02fd2f473, 0xd9b9a8e06c6f9fc3,
	0xc2cb62eea4480f75, 0x53f9360879d66217, 0x702e025a6e386e6e,
	0x53407dc94a9a575a, 0xc4e7ca1c6dc507c1, 0xfaddc22316d3b865,
	0x921a034701dd2eae, 0x2f0443c2be1780b2, 0xdbbe8890c8c933e1,
	0x1828af333e276f04, 0xcef55387752d262d, 0x730fe2f1e43253fc,
	0xf35e77dc1bddc209, 0xc8c22e3a9babf8ef, 0x818fedc5d50fd0cf,
	0x51f3e923d66e96ba, 0x376f5972439fad7e, 0x0d07e97ea48894ed,
	0x9fd75950d33a6d39, 0x29d1f50d82c8690e, 0x2519741907927691,
	0x5757d1ad0e479306, 0x187bc75197466c4b, 0x57d8ab7f0ce21dc6,
	0xa471451d0f2572a7, 0x8a02fca562de35ba, 0x9c081dab5a0d219a,
	0x717fc7df3da7feaa, 0x66efdbde63b26214, 0xe0873e91cad67074,
	0xa5681dbc7482dd56, 0xccf591cbd99abe64, 0x6acb00fbf990df8c,
	0x6a49d518c5a53c09, 0x82c87fee3fa35a04, 0xb064ee1636b3bad4,
	0x432c5424190ceab3, 0x1a8667703e68c3f8, 0x9a5c6f0b7d4ca74a,
	0xa967bfd573fd5ec7, 0x29a2dcb34af0365d, 0x39bd0331a5395d0d,
	0x8823e8c69202573f, 0x15f4f6cccf5d1eb7, 0x5dceddd1e4805a39,
	0x5f4a6549c9ea32f7, 0x38247002bb89180f, 0xfad0edc9b1e599c3,
	0x6334a5f262c7725b, 0xdd6199b5aa0086f4, 0x93737de3a5cc7cc4,
	0x94acdbcd0ea2a09f, 0x249ecb8e3d51160e, 0xbce1e522dca75df3,
	0xa74963b1a8e211ef, 0x5e41e66f85a9860a, 0x83075ff2b0f2056c,
	0x9f16b37036af9317, 0xeb32391a88baee9e, 0x1849a8589d7db8f3,
	0x28b5ff2170a96efc, 0xcd701d5e7f9907c3, 0x39e8d9219722377c,
	0x1be99e5839846bc9, 0x19d45b36154a1a9a, 0x92092d1019eda1ce,
	0x51dc7ec091cd966b, 0x5791fcee06ff4c17, 0x6fb8134ff4282825,
	0x69f36daa1e712c94, 0x44f99e42af904eee, 0xf0a8b2925b20d87a,
	0x456443cbfcb85b6c, 0xc617aa3f663baf32, 0x93411fb1aa7cae7b,
	0x9f62f46e6eb29402, 0xc3f869f80d00e17c, 0x288f883544168e3c,
	0xea9b0e0a80ee9b52, 0x45441a2797122711, 0x7418914b47c2046d,
	0x07a71f1babd009b7, 0x9673f0cb94a59130, 0x52ec6ce86ccc6eb5,
	0xfe2dd3d4c52bde8d, 0xe9c5ca1dec7783b5, 0x092472f5766b6d1f,
	0xf4eaca11591731f5, 0x6a694f5202df7baf, 0x0b686e8fa0bad1fe,
	0x725301706771d5d2, 0x44df62bea9b2ee65, 0x58ac80974ac696fb,
	0x15b5ea5cea25ceb7, 0x649de499bc6fa9c3, 0xce2ca137e495e887,
	0x2fc90d64069ea45e, 0x9404e650ef27e11e, 0x94deef15c07c3a15,
	0x9f89ba55010752d7, 0x0b5e17e349c73ea6, 0xc0d25480221896ec,
	0x8b2d55335f353f1f, 0x03c6d6399a6313da, 0x077a7045898ef17e,
	0xdeaac47feb614937, 0x9ca9c7f6ddadf736, 0x870254dadd31dadd,
	0x819f7831c174a384, 0x507d9547d6b4cf3c, 0x73ea473821ee364d,
	0x0f0cb3874a53c2aa, 0x1bd4767bcba3b01b, 0x93cc35ea115dfa4b,
	0x498e095b62375a44, 0x0fa7d87153e04fb3, 0x39119377e91e3ea9,
	0x7add8ea75bf342f5, 0x83f3d27fecb33cdf, 0xab1e4b39316d546d,
	0xda13af908d957bbd, 0x9b1758b7214b7a37, 0xadfcb3a56940fc70,
	0xae0a571d0d36e733, 0x0a2a9bad56ee0569, 0xdfa5ebb4988feee6,
	0x2e6a7ace2c862abd, 0x5ba7370885c1c001, 0x82ffc08463d15639,
	0x104d1e902f8f1c23, 0x62c9810298b6d535, 0x1fe79cbc5793d809,
	0xe7529627b6964522, 0x0d9d32e017e72c38, 0xecb53ffd613c310d,
	0xa6a9870c4060d118, 0xbacfecb7f02d4861, 0xc3a5013ea3936890,
	0x2c1852fdd3aa086e, 0x8fcfb507cbde514c, 0xcc75fc3e8d97cca9,
	0xfc06742d5f61bd89, 0x747c744a58f6a9d9, 0xb3fc3185a4ed6ff2,
	0xd99d64578855c20a, 0x64e44c1b609b330e, 0x9c21081b2b62204e,
	0x64bde06cb8651f62, 0x6eaa3b71112152b6, 0x0968cced4e2288e1,
	0x5133c2259f8a80e3, 0x81d1db7f45df9bdb, 0x4f23ca8e159b0b08,
	0x5c12b3c61e694b5c, 0x6c1023f10e155ce2, 0x5f098f2f664164d0,
	0xd6f71ff41684ef18, 0x04ce0acdb07d4e50, 0xd5b44269f8559a4c,
	0x8f299ad5606ac41e, 0xcc470ea7f6d5c522, 0x17f835d892ab2341,
	0x02c74d6dd8a583e1, 0x27247b6d10f04bc6, 0xe7ff3bd64023670c,
	0x80023575b991e94e, 0x2a0fb0af0950a28c, 0x71efdb70936d25f9,
	0x48c7b97caba8cc34, 0x82daa393ca77eb0b, 0x080fb72107838b11,
	0x0b5b1a93d4c47fcd, 0xad279a7372982e69, 0x61da6428758b00c1,
	0x4501d3eefba4d2e4, 0x8ea2b71b2ab3c03c, 0xbb7d2a6442c49021,
	0x9a46042fc801ab88, 0x539a849cc49b1771, 0xd15bea285a92ef28,
	0xeac176fa404855ac, 0x1c412753ba215545, 0x3546fb368fe3c0d4,
	0xbe81fc301deb51d9, 0x9dbea99555728317, 0x1fc39228f6c91d9b,
	0x4e4554f4c8da3545, 0x6c8558f67b7caafa, 0xb2ac8311d0d991c4,
	0xf6eeaa581ae4d7aa, 0x64c0ec70d10f549f, 0xff9617f386beccbc,
	0xa10d11250d278584, 0xe575c1522be5cd52, 0xad3440df9daed093,
	0x342be0026e8afc76, 0xd2771dc7ecbae523, 0xc30539f120bf48eb,
	0x145dbd89625931bc, 0xdb169748bd0f2b78, 0x3211e29e923c851d,
	0x532f2751e48bce65, 0xee4181649002bada, 0xbf01e76ab6eeca55,
	0xb0f85896582c2e94, 0x39f859beb9de4213, 0xb1c69e8baef2d686,
	0xb03e74eabcf49fdf, 0x4aef82f304c66175, 0x0d18cab66f326c62,
	0xaa9746f071f32da7, 0xbd252a843f996f14, 0x3cf83d6b189870b1,
	0x7277aac083413cc9, 0x9d176134092a179f, 0xf9d4e34be5d2008d,
	0xa4b114b48629e516, 0x8ddaec10563b1035, 0x50356642fd95918a,
	0x0f404a7859eede0a, 0x5898d19667180237, 0x173c4066b93230b5,
	0x4df2594a81323f97, 0x4b84bb6e356eb7ae, 0xa20224542a308e56,
	0x0355082bccc43e6a, 0xf875b9c6557f1292, 0x70f76b74c6be4391,
	0xa8877c861a9a3a08, 0x77fa49d2a66ed755, 0x60b8a25930c01a23,
	0x465874197288a077, 0x32d9d7e2d1eb195f, 0xc534b5d022cf4a06,
	0x1d0dc241fbcb27e3, 0x4b5b744e9dd16472, 0x4bc572d1be582e52,
	0xf7c4e51516fa5a0a, 0x95b05e7bfaacc022, 0x17c7a8c777f6e602,
	0xbb347bda7c14c9b9, 0x1e93bd737ff67895, 0xfc52624762294154,
	0x2fb18fd348f9ee6e, 0xecb1b9ff127380c9, 0x2dd66bc9926f96f0,
	0x59b75001d3f96a83,
};

/*
 * One step: roll byte i+k in and return the chunk length if h passes.
 * Written as g + 2*h so the compiler emits one lea (a one-cycle chain).
 */
#define CDC_STEP(k, limit)                                              \
	do {                                                            \
		h = cdc_gear[p[i + (k)]] + 2 * h;                       \
		if (__builtin_expect(h < (limit), 0))                   \
			return i + (k) + 1;                             \
	} while (0)

#define CDC_STEP8(limit)                                                \
	do {                                                            \
		CDC_STEP(0, limit); CDC_STEP(1, limit);                 \
		CDC_STEP(2, limit); CDC_STEP(3, limit);                 \
		CDC_STEP(4, limit); CDC_STEP(5, limit);                 \
		CDC_STEP(6, limit); CDC_STEP(7, limit);                 \
	} while (0)

size_t cdc_cut(const uint8_t *p, size_t n)
{
	size_t i, normal;
	uint64_t h = 0;

	if (n <= CDC_MIN)
		return n;
	if (n > CDC_MAX)
		n = CDC_MAX;
	normal = n < CDC_AVG ? n : CDC_AVG;

	/* Fill the window so the first tested hash covers 64 bytes. */
	for (i = CDC_MIN - CDC_WINDOW; i < CDC_MIN; i++)
		h = cdc_gear[p[i]] + 2 * h;

	for (; i + 8 <= normal; i += 8)
		CDC_STEP8(CDC_LIMIT_S);
	for (; i < normal; i++)
		CDC_STEP(0, CDC_LIMIT_S);
	for (; i + 8 <= n; i += 8)
		CDC_STEP8(CDC_LIMIT_L);
	for (; i < n; i++)
		CDC_STEP(0, CDC_LIMIT_L);
	return n;
}
