/*
 * test_events.c: server/events.c, the ring between the training worker and the
 * SSE clients: frames in order and per job, the final flag, a timeout when
 * nothing comes, a reader that fell behind the ring is told it lost events, a
 * reader blocked in another thread is woken by a publish and by close.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "events.h"

static void test_order_filter_final(void **state)
{
    (void)state;
    EventHub *h = events_create();
    assert_non_null(h);
    uint64_t seq = events_head(h);
    assert_int_equal(seq, 0);
    events_publish(h, 1, "step", "{\"a\":1}", 0);
    events_publish(h, 2, "step", "{\"other\":1}", 0);
    events_publish(h, 1, "state", "{\"s\":\"completed\"}", 1);
    char *frame = NULL;
    int final = -1;
    assert_int_equal(events_next(h, 1, &seq, 100, &frame, &final), EVENTS_OK);
    assert_string_equal(frame, "id: 0\nevent: step\ndata: {\"a\":1}\n\n");
    assert_int_equal(final, 0);
    free(frame);
    /* job 2's event is skipped */
    assert_int_equal(events_next(h, 1, &seq, 100, &frame, &final), EVENTS_OK);
    assert_string_equal(frame, "id: 2\nevent: state\ndata: {\"s\":\"completed\"}\n\n");
    assert_int_equal(final, 1);
    free(frame);
    assert_int_equal(seq, 3);
    /* nothing more: a timeout after about the time asked */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(events_next(h, 1, &seq, 200, &frame, &final), EVENTS_TIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    assert_true(waited >= 0.19 && waited < 2.0);
    events_free(h);
}

static void test_slow_reader_loses(void **state)
{
    (void)state;
    EventHub *h = events_create();
    uint64_t seq = 0;
    for (int i = 0; i < EVENTS_RING + 5; i++)
        events_publish(h, 7, "step", "{}", 0);
    char *frame = NULL;
    int final;
    assert_int_equal(events_next(h, 7, &seq, 10, &frame, &final), EVENTS_LOST);
    /* a reader within the ring still gets the oldest kept event */
    seq = 5;
    assert_int_equal(events_next(h, 7, &seq, 10, &frame, &final), EVENTS_OK);
    assert_non_null(strstr(frame, "id: 5\n"));
    free(frame);
    events_free(h);
}

typedef struct {
    EventHub *h;
    int rc;
    char *frame;
} Reader;

static void *reader(void *arg)
{
    Reader *r = arg;
    uint64_t seq = events_head(r->h);
    int final;
    r->rc = events_next(r->h, 3, &seq, 10000, &r->frame, &final);
    return NULL;
}

static void test_wakeups(void **state)
{
    (void)state;
    EventHub *h = events_create();
    Reader r = {h, -1, NULL};
    pthread_t t;
    pthread_create(&t, NULL, reader, &r);
    usleep(100000);
    events_publish(h, 3, "epoch", "{\"e\":0}", 0);
    pthread_join(t, NULL);
    assert_int_equal(r.rc, EVENTS_OK);
    assert_non_null(strstr(r.frame, "event: epoch\ndata: {\"e\":0}"));
    free(r.frame);
    Reader r2 = {h, -1, NULL};
    pthread_create(&t, NULL, reader, &r2);
    usleep(100000);
    events_close(h);
    pthread_join(t, NULL);
    assert_int_equal(r2.rc, EVENTS_CLOSED);
    events_free(h);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_filter_final),
        cmocka_unit_test(test_slow_reader_loses),
        cmocka_unit_test(test_wakeups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
