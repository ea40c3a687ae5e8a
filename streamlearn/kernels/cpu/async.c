/* A micro-batch's weight updates on a second thread, while Python goes on with the rest of
 * the batch (error memory, drift detector, statistics), which does not read the weights.
 *
 * Python submits a Job: the batch's scoring (fused_step with score_only: the predictions and
 * losses the first update's own forward pass would give), then every update of the batch, in
 * order, each with its share of the replay rows and the learning rate the schedule gives after
 * the updates applied before it. Python waits for the scores only (updates_submit), and
 * for the whole Job before anything reads the model, the optimizer or the reservoir again.
 * Scoring here, not on Python's thread, keeps the weights on the core whose updates last wrote
 * them: read from the other core, each of their cache lines moved between the cores twice a
 * step (decision 0058). A Job may also be one forward-only call: the error memory's re-keying,
 * left running while Python encodes the next batch. One worker thread per
 * process serves every learner, one Job at a time. The results are the synchronous ones: the
 * same calls in the same order on the same buffers. The binding (bind_step.c) owns each Job, in
 * the step object that submits it, and waits for it before it changes or frees the Job. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "kernels.h" /* Job */

/* Handing a Job over costs no system call while both threads are busy: each side spins
 * (SPINS rounds of a pause) before it sleeps on a condition variable, and the other side
 * signals only a sleeper: in a VM a futex wake costs a sizeable part of a micro-batch's
 * updates (decision 0006). Dekker's handshake: a sleeper counts itself in, then
 * reads the counter; a signaller moves the counter, then reads the sleepers; all
 * sequentially consistent, so no wake-up is lost. */
#define SPINS 20000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER, submit_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, finished = PTHREAD_COND_INITIALIZER;
static Job *current;                 /* the last Job submitted */
static atomic_long submitted, done;  /* Jobs submitted and run; equal: the worker is idle */
static atomic_long scored;           /* Jobs past their scoring call (or without one) */
static atomic_int worker_sleeps, caller_sleeps; /* threads asleep on wake / finished */
static int started;                  /* the worker thread exists (in this process) */

static inline void pause_once(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void run(const Job *job) {
    Call call = job->call;
    int32_t applied = 0;
    for (int32_t u = 0; u < job->updates; u++) {
        if (job->call.r_idx) call.r_idx = job->call.r_idx + (int64_t)u * job->per_update;
        call.lr = job->lrs[applied];
        job->codes[u] = fused_step(job->net, &call);
        applied += job->codes[u] == 1;
    }
}

/* Spin, then sleep on `cond`, until `counter` differs from `value` (the worker, waiting for a
 * Job) or has reached it (a caller, waiting for Jobs to be done). */
static void await_count(atomic_long *counter, long value, int differ, atomic_int *sleeps,
                        pthread_cond_t *cond) {
#define READY(v) (differ ? (v) != value : (v) >= value)
    for (int i = 0; i < SPINS; i++) {
        if (READY(atomic_load(counter))) return;
        pause_once();
    }
    pthread_mutex_lock(&lock);
    atomic_fetch_add(sleeps, 1);
    while (!READY(atomic_load(counter))) pthread_cond_wait(cond, &lock);
    atomic_fetch_sub(sleeps, 1);
    pthread_mutex_unlock(&lock);
#undef READY
}

static void signal_sleeper(atomic_int *sleeps, pthread_cond_t *cond) {
    if (!atomic_load(sleeps)) return;
    pthread_mutex_lock(&lock);
    pthread_cond_broadcast(cond);
    pthread_mutex_unlock(&lock);
}

static void *worker(void *unused) {
    (void)unused;
    for (;;) {
        long ran = atomic_load(&done);
        await_count(&submitted, ran, 1, &worker_sleeps, &wake);
        Job *job = current;
        const Call *score = job->score; /* read once: the caller may reset it once scored */
        int learn = 1;
        if (score) {
            job->score_code = fused_step(job->net, score);
            learn = job->score_code == STEP_FORWARD_ONLY;
        }
        atomic_store(&scored, ran + 1);
        if (score) signal_sleeper(&caller_sleeps, &finished);
        if (learn) run(job);
        atomic_store(&done, ran + 1);
        signal_sleeper(&caller_sleeps, &finished);
    }
    return NULL;
}

/* A forked child has no worker thread (and maybe a lock held by the parent's): start over. */
static void after_fork_in_child(void) {
    pthread_mutex_init(&lock, NULL);
    pthread_mutex_init(&submit_lock, NULL);
    pthread_cond_init(&wake, NULL);
    pthread_cond_init(&finished, NULL);
    atomic_store(&submitted, 0);
    atomic_store(&done, 0);
    atomic_store(&scored, 0);
    atomic_store(&worker_sleeps, 0);
    atomic_store(&caller_sleeps, 0);
    current = NULL;
    started = 0;
}

__attribute__((constructor)) static void register_fork_handler(void) {
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

static int submit(Job *job) {
    if (!started) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, worker, NULL) != 0) return -2;
        pthread_detach(thread);
        started = 1;
    }
    await_count(&done, atomic_load(&submitted), 0, &caller_sleeps, &finished);
    current = job;
    atomic_fetch_add(&submitted, 1);
    signal_sleeper(&worker_sleeps, &wake);
    return 0;
}

/* Start the Job on the worker once the one before it has run; with a scoring call, return once
 * that call has run (its result in job->score_code; the updates may still run). 0, or -2 when
 * the thread could not be created (then nothing ran: the caller scores and updates itself). */
int updates_submit(Job *job) {
    pthread_mutex_lock(&submit_lock); /* the binding releases the GIL: threads may submit at once */
    const int result = submit(job);
    const long id = atomic_load(&submitted); /* this Job's: no other submits under the lock */
    pthread_mutex_unlock(&submit_lock);
    if (result == 0 && job->score) await_count(&scored, id, 0, &caller_sleeps, &finished);
    return result;
}

/* Block until every submitted Job has run (at once when they have). */
void updates_wait(void) {
    await_count(&done, atomic_load(&submitted), 0, &caller_sleeps, &finished);
}
