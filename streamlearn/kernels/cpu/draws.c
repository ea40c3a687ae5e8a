/* The reservoir's uniform integers (streamlearn/core/replay.py), drawn from its numpy
 * generator as numpy's Generator.integers draws them for int64: the same values from the same
 * stream of bits, the generator left in the same state. numpy's call costs a few microseconds
 * of Python and broadcasting for a few dozen draws; here it is one call.
 *
 * A draw in [0, r] (r inclusive) uses no bits when r = 0; 32 bits where r fits them: all of
 * one 32-bit draw when r = 2^32 - 1, else Lemire's multiply-and-reject method (D. Lemire, "Fast
 * random integer generation in an interval", ACM TOMACS 29(1), 2019) on 32-bit draws; past
 * that, the same on 64-bit draws (all of one when r = 2^64 - 1). The generator's own functions
 * make the draws (numpy keeps a 32-bit draw's unused half in the generator's state). */
#include <stdint.h>

#include "kernels.h"

static uint64_t lemire_32(const BitSource *bits, uint32_t range) {
    uint64_t scaled = (uint64_t)bits->next_uint32(bits->state) * range;
    uint32_t low = (uint32_t)scaled;
    if (low < range) {
        const uint32_t threshold = (uint32_t)(-range) % range; /* 2^32 mod range */
        while (low < threshold) {
            scaled = (uint64_t)bits->next_uint32(bits->state) * range;
            low = (uint32_t)scaled;
        }
    }
    return scaled >> 32;
}

/* the high half of a * b, its low half in *low */
static inline uint64_t multiply_64(uint64_t a, uint64_t b, uint64_t *low) {
#ifdef __SIZEOF_INT128__
    const __uint128_t product = (__uint128_t)a * b;
    *low = (uint64_t)product;
    return (uint64_t)(product >> 64);
#else /* in 32-bit halves */
    const uint64_t a0 = a & 0xFFFFFFFFu, a1 = a >> 32, b0 = b & 0xFFFFFFFFu, b1 = b >> 32;
    const uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    const uint64_t middle = (p00 >> 32) + (p10 & 0xFFFFFFFFu) + (p01 & 0xFFFFFFFFu);
    *low = a * b;
    return p11 + (p10 >> 32) + (p01 >> 32) + (middle >> 32);
#endif
}

static uint64_t lemire_64(const BitSource *bits, uint64_t range) {
    uint64_t low, high = multiply_64(bits->next_uint64(bits->state), range, &low);
    if (low < range) {
        const uint64_t threshold = (uint64_t)(-range) % range; /* 2^64 mod range */
        while (low < threshold) high = multiply_64(bits->next_uint64(bits->state), range, &low);
    }
    return high;
}

/* one draw, uniform on [0, last] */
static uint64_t draw_through(const BitSource *bits, uint64_t last) {
    if (last == 0) return 0;
    if (last < UINT32_MAX) return lemire_32(bits, (uint32_t)last + 1);
    if (last == UINT32_MAX) return bits->next_uint32(bits->state);
    if (last < UINT64_MAX) return lemire_64(bits, last + 1);
    return bits->next_uint64(bits->state);
}

void uniform_draws(const BitSource *bits, uint64_t last, int32_t growing, int64_t count,
                   int64_t *out) {
    for (int64_t i = 0; i < count; i++)
        out[i] = (int64_t)draw_through(bits, growing ? last + (uint64_t)i : last);
}
