/* LossDeviationDetector.update (streamlearn/core/drift/loss_deviation.py) as one per-event loop:
 * numpy's batched form costs ~15 small array ops per micro-batch, this loop well under a
 * microsecond. Python owns the ring and the counters.
 *
 * Each finite loss x: s = alpha x + (1 - alpha) s (the first loss starts s as it is). Past the
 * cooldown and with at least min_samples (and 1) values in the window of the last `window`
 * smoothed values, drift fires when s > mean + max(k std, min_rise) of that window; a firing
 * restarts the window (s is not kept) and starts the cooldown. Otherwise s joins the window.
 * The window's sums run on values shifted by the smoothed loss before the batch (so the
 * variance does not cancel against the squared mean) and are recomputed from the ring on every
 * call (so rounding does not build up over a long stream). */
#include <math.h>
#include <stdint.h>

enum { FILLED, HEAD, QUIET, SEEN, SMOOTHED_SET };

/* counters: [filled, head, quiet, seen, whether *smoothed holds a value], updated in place;
 * fired: room for n offsets into losses. Returns how many fired. */
int32_t drift_update(const double *losses, int32_t n, double *ring, int64_t window, double alpha,
                     double k, int64_t min_samples, double min_rise, int64_t cooldown,
                     int64_t *counters, double *smoothed, int32_t *fired) {
    int64_t filled = counters[FILLED], head = counters[HEAD], quiet = counters[QUIET];
    int64_t seen = counters[SEEN];
    int set = counters[SMOOTHED_SET] != 0;
    double s = set ? *smoothed : 0.0, shift = s, sum = 0.0, sumsq = 0.0;
    const int64_t needed = min_samples > 1 ? min_samples : 1;
    const double keep = 1.0 - alpha;
    for (int64_t j = 0; j < filled; j++) {
        const double d = ring[j] - shift;
        sum += d;
        sumsq += d * d;
    }
    int32_t count = 0;
    for (int32_t i = 0; i < n; i++) {
        const double x = losses[i];
        if (!isfinite(x)) continue;
        if (set) { /* each product rounded, as the numpy form's filter: no fused multiply-add */
            volatile double fresh = alpha * x, kept = keep * s;
            s = fresh + kept;
        } else {
            s = shift = x;
            set = 1;
        }
        seen++;
        if (quiet > 0) {
            quiet--;
        } else if (filled >= needed) {
            const double mean = sum / (double)filled, var = sumsq / (double)filled - mean * mean;
            const double spread = k * sqrt(var > 0.0 ? var : 0.0);
            if (s - shift > mean + (spread > min_rise ? spread : min_rise)) {
                fired[count++] = i;
                quiet = cooldown;
                filled = head = 0;
                sum = sumsq = 0.0;
                continue;
            }
        }
        const double d = s - shift;
        if (filled == window) {
            const double old = ring[head] - shift;
            sum -= old;
            sumsq -= old * old;
        } else {
            filled++;
        }
        ring[head] = s;
        head = (head + 1) % window;
        sum += d;
        sumsq += d * d;
    }
    counters[FILLED] = filled, counters[HEAD] = head, counters[QUIET] = quiet;
    counters[SEEN] = seen, counters[SMOOTHED_SET] = set;
    *smoothed = s;
    return count;
}
