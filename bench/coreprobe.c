/*
 * Cross-core round trip: two threads, pinned to the two given cores, hand
 * one cache line back and forth for the given milliseconds; prints the mean
 * nanoseconds per round trip.
 *
 * bench/node.py runs it between benchmark runs to record the state of the
 * VM: on the 2-vCPU VM these benchmarks were written on, the round trip
 * between the server's core and the client's moves between ~130-180 ns and
 * ~470-510 ns as the host places the vCPUs, and every -P 1 rate of either
 * server moves with it (docs/benchmarks.md).
 *
 * usage: coreprobe <core a> <core b> <milliseconds>
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Atomic long line __attribute__((aligned(64)));
static _Atomic int stop __attribute__((aligned(64)));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int pin(int core) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(core, &s);
    return pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

static void *answer(void *arg) {
    if (pin(*(int *)arg) != 0) {
        fprintf(stderr, "coreprobe: cannot pin to core %d\n", *(int *)arg);
        exit(1);
    }
    /* Odd values are questions; the answer makes them even. */
    while (!atomic_load(&stop)) {
        long v = atomic_load(&line);
        if (v & 1)
            atomic_store(&line, v + 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: coreprobe <core a> <core b> <milliseconds>\n");
        return 2;
    }
    int a = atoi(argv[1]), b = atoi(argv[2]);
    double secs = atof(argv[3]) / 1000.0;
    pthread_t t;
    if (pthread_create(&t, NULL, answer, &b) != 0 || pin(a) != 0) {
        fprintf(stderr, "coreprobe: cannot start the threads\n");
        return 1;
    }
    double start = now(), end = start + secs;
    long trips = 0;
    while (now() < end) {
        for (int i = 0; i < 1000; i++) {
            long v = atomic_load(&line) + 1; /* even + 1: a question */
            atomic_store(&line, v);
            while (atomic_load(&line) == v)
                ;
        }
        trips += 1000;
    }
    double took = now() - start;
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("%.0f\n", took * 1e9 / trips);
    return 0;
}
