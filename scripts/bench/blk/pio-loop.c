/*
 * scripts/bench/blk/pio-loop.c — owns the physical ceiling of the blk
 * benchmark: the same 4 KiB (or any size) positioned reads or writes the
 * device serves, done by a C loop of pread(2)/pwrite(2) on the same image,
 * from `threads` threads (the benchmark uses one for queue depth 1 and one
 * per CPU for depth 32: a synchronous loop keeps one request in flight per
 * thread, and more threads than CPUs only queue on them). No event loop, no
 * thread hops: what this machine's page cache can do.
 *
 *   pio-loop IMAGE read|write BS RANDOM(0|1) THREADS MS
 * prints "OPS SECONDS" on one line.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int fd;
static int do_write;
static size_t bs;
static int random_pos;
static uint64_t blocks;
static double deadline;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct worker {
  pthread_t thread;
  uint64_t seed;
  uint64_t ops;
};

static void *run(void *arg) {
  struct worker *w = arg;
  char *buf = aligned_alloc(4096, (bs + 4095) & ~(size_t)4095);
  memset(buf, 0x5a, bs);
  uint64_t x = w->seed | 1, seq = w->seed % blocks;
  for (;;) {
    /* check the clock every 64 requests: a clock read costs as much as a small pread */
    for (int i = 0; i < 64; i++) {
      uint64_t block;
      if (random_pos) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17; /* xorshift64 */
        block = x % blocks;
      } else {
        block = seq;
        seq = (seq + 1) % blocks;
      }
      ssize_t n = do_write ? pwrite(fd, buf, bs, (off_t)(block * bs)) : pread(fd, buf, bs, (off_t)(block * bs));
      if (n != (ssize_t)bs) {
        perror(do_write ? "pwrite" : "pread");
        exit(1);
      }
      w->ops++;
    }
    if (now() >= deadline) break;
  }
  free(buf);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: %s IMAGE read|write BS RANDOM THREADS MS\n", argv[0]);
    return 2;
  }
  do_write = strcmp(argv[2], "write") == 0;
  bs = strtoull(argv[3], NULL, 10);
  random_pos = atoi(argv[4]);
  int threads = atoi(argv[5]);
  double ms = atof(argv[6]);
  fd = open(argv[1], do_write ? O_RDWR : O_RDONLY);
  if (fd < 0) {
    perror(argv[1]);
    return 1;
  }
  struct stat st;
  fstat(fd, &st);
  blocks = (uint64_t)st.st_size / bs;
  if (threads < 1 || bs == 0 || blocks == 0) return 2;
  struct worker *w = calloc(threads, sizeof *w);
  double t0 = now();
  deadline = t0 + ms / 1000;
  for (int i = 0; i < threads; i++) {
    w[i].seed = 0x9e3779b97f4a7c15ull * (i + 1) ^ (uint64_t)getpid();
    pthread_create(&w[i].thread, NULL, run, &w[i]);
  }
  uint64_t ops = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(w[i].thread, NULL);
    ops += w[i].ops;
  }
  printf("%llu %.6f\n", (unsigned long long)ops, now() - t0);
  return 0;
}
