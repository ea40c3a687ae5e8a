/* ReservoirBuffer.add's inserts for a micro-batch once the reservoir is full or filling up
 * (streamlearn/core/replay.py): Algorithm R, one row at a time in batch order, so a later
 * row simply overwrites an earlier one drawn to the same slot, as sequential insertion does.
 * Python draws the random slots (its seeded generator) and owns every buffer.
 *
 * Row i of the batch is item seen + i. While seen + i < capacity it takes that free slot;
 * after that drawn[i - free] is its uniform draw from [0, seen + i] and it is kept in that
 * slot when the draw falls below capacity. */
#include <stdint.h>
#include <string.h>

void reservoir_insert(float *num, int64_t *cat, char *y, int64_t capacity, int64_t seen,
                      const float *batch_num, const int64_t *batch_cat, const char *batch_y,
                      int64_t rows, int32_t num_dim, int32_t cat_dim, int32_t y_size,
                      const int64_t *drawn) {
    const int64_t free = seen < capacity ? capacity - seen : 0;
    for (int64_t i = 0; i < rows; i++) {
        const int64_t slot = i < free ? seen + i : drawn[i - free];
        if (slot < 0 || slot >= capacity) continue;
        memcpy(num + slot * num_dim, batch_num + i * num_dim, sizeof(float) * (size_t)num_dim);
        memcpy(cat + slot * cat_dim, batch_cat + i * cat_dim, sizeof(int64_t) * (size_t)cat_dim);
        memcpy(y + slot * y_size, batch_y + i * y_size, (size_t)y_size);
    }
}
