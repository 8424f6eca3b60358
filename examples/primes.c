/* primes: the seed benchmark.
 *
 * For every n in range(100000, 5000000, 100000), the sum of all primes below
 * n, found by trial division exactly as the seed's isprime() does it. Run
 * once in this process, then with one mpx_process per core, and print the
 * wall time of each, the speed-up and the checksum (the sum of all sums),
 * which must be the same for every worker count.
 *
 * Workers share one memfd page: a counter hands out the inputs, largest
 * first, and each result goes into its own slot. So the split balances
 * itself, and it works with every start method that can pass an fd.
 *
 *   primes [--max N] [--step S] [--workers K] [--method fork|forkserver]
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <mpx.h>

#define MAX_INPUTS 4096

typedef struct {
  long next;                 /* next input to take, atomically */
  long count;                /* number of inputs */
  long n[MAX_INPUTS];        /* the inputs, largest first */
  long long sum[MAX_INPUTS]; /* results, one slot per input */
} board_t;

typedef struct {
  int fd; /* the board's memfd */
} worker_args_t;

/* The seed's isprime: trial division by every i in 2..ceil(sqrt(n)). */
static int isprime(long n) {
  long i, max;
  if (n < 2) return 0;
  if (n == 2) return 1;
  max = (long)ceil(sqrt((double)n));
  for (i = 2; i <= max; i++)
    if (n % i == 0) return 0;
  return 1;
}

static long long sum_primes(long n) {
  long long s = 0;
  long x;
  for (x = 2; x < n; x++)
    if (isprime(x)) s += x;
  return s;
}

static void drain(board_t *b) {
  for (;;) {
    long i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
    if (i >= b->count) return;
    b->sum[i] = sum_primes(b->n[i]);
  }
}

static board_t *map_board(int fd) {
  void *p = mmap(NULL, sizeof(board_t), PROT_READ | PROT_WRITE, MAP_SHARED,
                 fd, 0);
  return p == MAP_FAILED ? NULL : p;
}

static int worker(const void *args, size_t len) {
  worker_args_t a;
  board_t *b;
  if (len != sizeof a) return 2;
  memcpy(&a, args, sizeof a);
  b = map_board(a.fd);
  if (b == NULL) return 3;
  drain(b);
  return 0;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long long checksum(const board_t *b) {
  long long s = 0;
  long i;
  for (i = 0; i < b->count; i++) s += b->sum[i];
  return s;
}

static void reset(board_t *b, long lo, long hi, long step) {
  long n, k = 0;
  memset(b, 0, sizeof *b);
  /* Largest first, so the last inputs handed out are the cheap ones. */
  for (n = lo; n < hi && k < MAX_INPUTS; n += step) k++;
  b->count = k;
  for (n = lo, k = b->count - 1; k >= 0; n += step, k--) b->n[k] = n;
}

static int run_parallel(board_t *b, int fd, int workers,
                        mpx_start_method_t method) {
  mpx_process_t *procs[256];
  worker_args_t a = {fd};
  mpx_process_opts_t o;
  int i, rc = 0, code;

  memset(&o, 0, sizeof o);
  o.target = worker;
  o.args = &a;
  o.args_len = sizeof a;
  o.start_method = method;
  o.pass_fds = &fd;
  o.n_pass_fds = 1;
  for (i = 0; i < workers; i++) {
    procs[i] = NULL;
    if ((rc = mpx_process_new(&procs[i], &o)) != 0 ||
        (rc = mpx_process_start(procs[i])) != 0) {
      fprintf(stderr, "primes: cannot start worker %d: %s\n", i,
              mpx_last_error());
      break;
    }
  }
  workers = rc ? i + (procs[i] != NULL) : workers;
  for (i = 0; i < workers; i++) {
    if (mpx_process_join(procs[i], -1) == 0 &&
        mpx_process_exitcode(procs[i], &code) == 0 && code != 0) {
      fprintf(stderr, "primes: worker %d exited with %d\n", i, code);
      rc = MPX_EWORKER;
    }
    mpx_process_free(procs[i]);
  }
  (void)b;
  return rc;
}

static void usage(void) {
  fprintf(stderr, "usage: primes [--max N] [--step S] [--workers K] "
                  "[--method fork|forkserver]\n");
  exit(2);
}

int main(int argc, char **argv) {
  long lo = 100000, hi = 5000000, step = 100000;
  int workers = mpx_cpu_count(), fd, i, rc;
  mpx_start_method_t method = MPX_START_FORK;
  double t0, t_single, t_par;
  long long sum_single, sum_par;
  board_t *b;

  for (i = 1; i < argc; i++) {
    if (i + 1 >= argc) usage();
    if (strcmp(argv[i], "--max") == 0) hi = atol(argv[++i]);
    else if (strcmp(argv[i], "--step") == 0) step = atol(argv[++i]);
    else if (strcmp(argv[i], "--workers") == 0) workers = atoi(argv[++i]);
    else if (strcmp(argv[i], "--method") == 0) {
      if (mpx_start_method_parse(argv[++i], &method) != 0 ||
          method == MPX_START_SPAWN) usage();
    } else usage();
  }
  if (hi <= lo || step <= 0 || workers < 1 || workers > 256) usage();

  fd = memfd_create("mpx-primes", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, sizeof(board_t)) != 0 ||
      (b = map_board(fd)) == NULL) {
    perror("primes: shared board");
    return 1;
  }

  reset(b, lo, hi, step);
  printf("primes: sum of primes below n for n in range(%ld, %ld, %ld): "
         "%ld inputs\n", lo, hi, step, b->count);
  printf("%-8s %-10s %10s %8s %20s\n", "workers", "method", "wall_s",
         "speedup", "checksum");
  fflush(stdout);

  t0 = now();
  drain(b);
  t_single = now() - t0;
  sum_single = checksum(b);
  printf("%-8d %-10s %10.3f %8.2f %20lld\n", 1, "in-process", t_single, 1.0,
         sum_single);
  fflush(stdout);

  reset(b, lo, hi, step);
  t0 = now();
  rc = run_parallel(b, fd, workers, method);
  t_par = now() - t0;
  sum_par = checksum(b);
  printf("%-8d %-10s %10.3f %8.2f %20lld\n", workers,
         mpx_start_method_name(method), t_par, t_single / t_par, sum_par);

  if (rc != 0) return 1;
  if (sum_par != sum_single) {
    printf("checksum MISMATCH: %lld != %lld\n", sum_par, sum_single);
    return 1;
  }
  printf("checksum OK: %lld\n", sum_single);
  return 0;
}
