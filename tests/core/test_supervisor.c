/* Tests of the supervisor (core/pool/supervisor.h): restart policies, stderr
 * relay and tail, intensity, backoff, retirement, stop and free.
 *
 * Each test runs its own uv loop until a condition holds, with a 30 s
 * guard. Workers are forked (one test uses the forkserver) and run
 * `worker` below, which first moves the supervisor's stderr pipe onto its
 * fd 2. Tests assert in the parent only, on what the supervisor's
 * callbacks reported, and check at the end that every worker pid seen has
 * been reaped. Timing checks are lower bounds only. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <mpx.h>

#include "core/pool/supervisor.h"
#include "../mpx_test.h"

#define GUARD_S 30.0
#define MAX_EVENTS 1024
#define MAX_SLOTS 4
#define TAIL_MAX (MPX__SUP_TAIL_LINES * (MPX__SUP_LINE_MAX + 1) + 1)

/* ---- the worker ----------------------------------------------------------- */

enum {
  W_EXIT,        /* exit `value` at once */
  W_SLEEP_EXIT,  /* sleep sleep_ms, exit `value` */
  W_LINES,       /* 20 lines and a partial one on stderr, exit `value` */
  W_LONG_LINE,   /* a 2000-byte line then "after", exit `value` */
  W_SEGV,        /* die of SIGSEGV */
  W_PAUSE,       /* wait for a signal */
  W_IGNORE_TERM, /* ignore SIGTERM, wait for SIGKILL */
  W_FLOOD        /* fill a large stderr pipe with lines, exit `value` */
};

typedef struct {
  int stderr_fd;
  int mode;
  int value;
  int sleep_ms;
} wargs_t;

static int worker(const void *a, size_t n) {
  wargs_t w;
  int i;
  if (n != sizeof w) return 100;
  memcpy(&w, a, sizeof w);
  mpx__sup_worker_init(w.stderr_fd);
  switch (w.mode) {
  case W_EXIT:
    return w.value;
  case W_SLEEP_EXIT: {
    struct timespec ts = {w.sleep_ms / 1000, (w.sleep_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    return w.value;
  }
  case W_LINES:
    for (i = 0; i < 20; i++) fprintf(stderr, "line %02d\n", i);
    fputs("partial", stderr);
    fflush(stderr);
    return w.value;
  case W_LONG_LINE:
    for (i = 0; i < 2000; i++) fputc('x', stderr);
    fputs("\nafter\n", stderr);
    fflush(stderr);
    return w.value;
  case W_SEGV:
    /* The default action, even under AddressSanitizer's handler. */
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
    return 99;
  case W_PAUSE:
    for (;;) pause();
  case W_IGNORE_TERM:
    signal(SIGTERM, SIG_IGN);
    for (;;) pause();
  case W_FLOOD: {
    /* Lines of 13 bytes up to 3/4 of what the pipe holds, so the writes
     * never block while nobody reads; the last line is "flood end". */
    long cap;
    (void)fcntl(STDERR_FILENO, F_SETPIPE_SZ, 1 << 20);
    cap = fcntl(STDERR_FILENO, F_GETPIPE_SZ);
    if (cap <= 0) cap = 65536;
    for (i = 0; i < (int)(cap / 4 * 3 / 13); i++)
      fprintf(stderr, "flood %06d\n", i);
    fputs("flood end\n", stderr);
    fflush(stderr);
    return w.value;
  }
  }
  return 101;
}

/* ---- the test context ------------------------------------------------------ */

typedef struct ctx_s ctx_t;
struct ctx_s {
  uv_loop_t loop;
  mpx__sup_t *sup;
  mpx_start_method_t method;
  const char *target_spec;
  bool prepare_fails;
  int mode[MAX_SLOTS], value[MAX_SLOTS], sleep_ms[MAX_SLOTS];
  wargs_t wargs[MAX_SLOTS];
  /* Per-start adjustments (slot_starts[idx] starts so far). */
  void (*choose)(ctx_t *c, unsigned idx, wargs_t *w);
  void (*hook_started)(ctx_t *c, unsigned idx, pid_t pid);

  unsigned prepares, releases, starts, exits, broken, empty;
  unsigned exits_at_empty; /* exits reported when empty() came */
  unsigned slot_starts[MAX_SLOTS];
  unsigned start_idx[MAX_EVENTS];
  pid_t start_pid[MAX_EVENTS];
  double start_t[MAX_EVENTS];
  unsigned exit_idx[MAX_EVENTS];
  pid_t exit_pid[MAX_EVENTS];
  int exit_code[MAX_EVENTS];
  char exit_tail[8][TAIL_MAX]; /* tails of the first 8 exits */
  char why[4096];
};

static int prepare(void *arg, unsigned idx, mpx__sup_start_t *st);

static void release(void *arg, unsigned idx) {
  ctx_t *c = arg;
  (void)idx;
  c->releases++;
}

static int prepare(void *arg, unsigned idx, mpx__sup_start_t *st) {
  ctx_t *c = arg;
  wargs_t *w = &c->wargs[idx];
  c->prepares++;
  CU_ASSERT(st->stderr_fd > 2);
  if (c->prepare_fails) {
    mpx_start_method_t m;
    /* Fails and leaves a message for mpx_last_error(). */
    return mpx_start_method_parse("bogus-method", &m);
  }
  memset(w, 0, sizeof *w);
  w->stderr_fd = st->stderr_fd;
  w->mode = c->mode[idx];
  w->value = c->value[idx];
  w->sleep_ms = c->sleep_ms[idx];
  if (c->choose != NULL) c->choose(c, idx, w);
  if (c->target_spec != NULL)
    st->opts.target_spec = c->target_spec;
  else
    st->opts.target = worker;
  st->opts.args = w;
  st->opts.args_len = sizeof *w;
  st->opts.start_method = c->method;
  st->opts.daemon = true; /* never outlives a test that crashed */
  st->release = release;
  return 0;
}

static void on_started(void *arg, unsigned idx, pid_t pid) {
  ctx_t *c = arg;
  CU_ASSERT(pid > 0);
  CU_ASSERT_EQUAL(mpx__sup_pid(c->sup, idx), pid);
  if (c->starts < MAX_EVENTS) {
    c->start_idx[c->starts] = idx;
    c->start_pid[c->starts] = pid;
    c->start_t[c->starts] = mpx_test_now();
  }
  c->starts++;
  c->slot_starts[idx]++;
  if (c->hook_started != NULL) c->hook_started(c, idx, pid);
}

static void on_exited(void *arg, unsigned idx, pid_t pid, int code,
                      const char *tail) {
  ctx_t *c = arg;
  CU_ASSERT_PTR_NOT_NULL_FATAL(tail);
  if (c->exits < MAX_EVENTS) {
    c->exit_idx[c->exits] = idx;
    c->exit_pid[c->exits] = pid;
    c->exit_code[c->exits] = code;
  }
  if (c->exits < 8)
    snprintf(c->exit_tail[c->exits], TAIL_MAX, "%s", tail);
  c->exits++;
}

static void on_broken(void *arg, const char *why) {
  ctx_t *c = arg;
  c->broken++;
  snprintf(c->why, sizeof c->why, "%s", why);
}

static void on_empty(void *arg, const char *why) {
  ctx_t *c = arg;
  c->empty++;
  c->exits_at_empty = c->exits;
  snprintf(c->why, sizeof c->why, "%s", why);
}

static ctx_t *ctx_new(void) {
  ctx_t *c = calloc(1, sizeof *c);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  CU_ASSERT_EQUAL_FATAL(uv_loop_init(&c->loop), 0);
  c->method = MPX_START_FORK;
  return c;
}

static mpx__sup_opts_t sup_opts(ctx_t *c, unsigned n, mpx__restart_t restart) {
  mpx__sup_opts_t o;
  memset(&o, 0, sizeof o);
  o.name = "suptest";
  o.n = n;
  o.restart = restart;
  o.max_restarts = 1000;
  o.period = 60;
  o.arg = c;
  o.prepare = prepare;
  o.started = on_started;
  o.exited = on_exited;
  o.broken = on_broken;
  o.empty = on_empty;
  return o;
}

static void sup_begin(ctx_t *c, const mpx__sup_opts_t *o) {
  CU_ASSERT_EQUAL_FATAL(mpx__sup_new(&c->sup, &c->loop, o), 0);
  CU_ASSERT_EQUAL_FATAL(mpx__sup_start(c->sup), 0);
}

/* ---- running the loop ------------------------------------------------------ */

static void on_guard(uv_timer_t *t) { *(bool *)t->data = true; }
static void on_tick(uv_timer_t *t) { (void)t; }

/* Runs the loop until cond(c) or `timeout` seconds; a 10 ms tick makes the
 * loop come back to check conditions no callback changes (/proc). */
static bool run_until(ctx_t *c, bool (*cond)(ctx_t *), double timeout) {
  uv_timer_t guard, tick;
  bool fired = false;
  uv_timer_init(&c->loop, &guard);
  uv_timer_init(&c->loop, &tick);
  guard.data = &fired;
  uv_timer_start(&guard, on_guard, (uint64_t)(timeout * 1000), 0);
  uv_timer_start(&tick, on_tick, 10, 10);
  while (!(cond != NULL && cond(c)) && !fired) uv_run(&c->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(&c->loop, UV_RUN_NOWAIT); /* runs the close callbacks */
  return cond != NULL && cond(c);
}

/* Lets the loop run a while longer: nothing more may happen. */
static void settle(ctx_t *c, double seconds) { run_until(c, NULL, seconds); }

static bool not_our_child(pid_t pid, mpx_start_method_t m) {
  siginfo_t si;
  if (m == MPX_START_FORKSERVER) /* the server's child, reaped by it */
    return kill(pid, 0) == -1 && errno == ESRCH;
  memset(&si, 0, sizeof si);
  return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == -1 &&
         errno == ECHILD;
}

/* Frees the supervisor, drains the loop, and checks every worker seen is
 * gone. */
static void finish(ctx_t *c) {
  unsigned i, n = c->starts < MAX_EVENTS ? c->starts : MAX_EVENTS;
  unsigned exits = c->exits;
  mpx__sup_free(c->sup);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  CU_ASSERT_EQUAL(uv_loop_close(&c->loop), 0);
  CU_ASSERT_EQUAL(c->exits, exits); /* no callback after free */
  for (i = 0; i < n; i++) {
    bool gone = not_our_child(c->start_pid[i], c->method);
    if (!gone) fprintf(stderr, "pid %d not reaped\n", (int)c->start_pid[i]);
    CU_ASSERT(gone);
  }
  CU_ASSERT_EQUAL(mpx_active_children(NULL, 0), 0);
  free(c);
}

static bool all_done(ctx_t *c) {
  return mpx__sup_alive(c->sup) == 0 && c->exits == c->starts;
}

/* ---- tests ------------------------------------------------------------------ */

static unsigned stop_target;
static bool starts_reached(ctx_t *c) { return c->starts >= stop_target; }

static void test_permanent(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 2, MPX__RESTART_PERMANENT);
  unsigned i, at_stop, exits_at_stop;
  c->mode[0] = c->mode[1] = W_SLEEP_EXIT;
  c->sleep_ms[0] = c->sleep_ms[1] = 20;
  sup_begin(c, &o);
  CU_ASSERT_EQUAL(mpx__sup_alive(c->sup), 2);
  CU_ASSERT_EQUAL(c->starts, 2);
  stop_target = 8;
  CU_ASSERT_FATAL(run_until(c, starts_reached, GUARD_S));
  at_stop = c->starts;
  exits_at_stop = c->exits;
  mpx__sup_stop(c->sup, 5);
  CU_ASSERT(run_until(c, all_done, GUARD_S));
  settle(c, 0.2);
  CU_ASSERT_EQUAL(c->starts, at_stop);
  CU_ASSERT_EQUAL(c->exits, c->starts);
  CU_ASSERT_EQUAL(mpx__sup_alive(c->sup), 0);
  CU_ASSERT_EQUAL(mpx__sup_restarts(c->sup), c->starts - 2);
  CU_ASSERT(c->slot_starts[0] >= 2);
  CU_ASSERT(c->slot_starts[1] >= 2);
  CU_ASSERT_EQUAL(c->prepares, c->starts);
  CU_ASSERT_EQUAL(c->releases, c->prepares);
  CU_ASSERT_EQUAL(c->broken, 0);
  for (i = 0; i < c->exits; i++) {
    if (i < exits_at_stop) {
      CU_ASSERT_EQUAL(c->exit_code[i], 0);
    } else { /* running when stop() sent SIGTERM, or just done */
      CU_ASSERT(c->exit_code[i] == 0 || c->exit_code[i] == -SIGTERM);
    }
    CU_ASSERT(c->exit_pid[i] > 0);
  }
  for (i = 0; i < 8; i++) CU_ASSERT_STRING_EQUAL(c->exit_tail[i], "");
  /* start again after stop: refused */
  CU_ASSERT_EQUAL(mpx__sup_start(c->sup), MPX_ESTATE);
  finish(c);
}

static void choose_transient(ctx_t *c, unsigned idx, wargs_t *w) {
  /* slot 1: exits 3 on its first two starts, 0 on the third */
  if (idx == 1) w->value = c->slot_starts[1] < 2 ? 3 : 0;
}

static bool four_exits(ctx_t *c) { return c->exits >= 4 && all_done(c); }

static void test_transient(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 2, MPX__RESTART_TRANSIENT);
  unsigned i, codes_slot1[3], n1 = 0;
  c->mode[0] = c->mode[1] = W_EXIT;
  c->choose = choose_transient;
  sup_begin(c, &o);
  CU_ASSERT(run_until(c, four_exits, GUARD_S));
  settle(c, 0.3);
  CU_ASSERT_EQUAL(c->starts, 4);
  CU_ASSERT_EQUAL(c->exits, 4);
  CU_ASSERT_EQUAL(c->slot_starts[0], 1);
  CU_ASSERT_EQUAL(c->slot_starts[1], 3);
  CU_ASSERT_EQUAL(mpx__sup_restarts(c->sup), 2);
  for (i = 0; i < c->exits && i < MAX_EVENTS; i++) {
    if (c->exit_idx[i] == 0) {
      CU_ASSERT_EQUAL(c->exit_code[i], 0);
    } else if (n1 < 3) {
      codes_slot1[n1++] = (unsigned)c->exit_code[i];
    }
  }
  CU_ASSERT_EQUAL_FATAL(n1, 3);
  CU_ASSERT_EQUAL(codes_slot1[0], 3);
  CU_ASSERT_EQUAL(codes_slot1[1], 3);
  CU_ASSERT_EQUAL(codes_slot1[2], 0);
  CU_ASSERT_EQUAL(c->broken, 0);
  /* Both ended normally: nothing is restarted, the supervisor is empty. */
  CU_ASSERT_EQUAL(c->empty, 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(c->why, "exited with code 0; restart policy transient"));
  finish(c);
}

static bool two_exits(ctx_t *c) { return c->exits >= 2 && all_done(c); }

static void test_temporary(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 2, MPX__RESTART_TEMPORARY);
  unsigned i;
  c->mode[0] = W_EXIT;
  c->value[0] = 3;
  c->mode[1] = W_SEGV;
  sup_begin(c, &o);
  CU_ASSERT(run_until(c, two_exits, GUARD_S));
  settle(c, 0.3);
  CU_ASSERT_EQUAL(c->starts, 2);
  CU_ASSERT_EQUAL(c->exits, 2);
  CU_ASSERT_EQUAL(mpx__sup_restarts(c->sup), 0);
  for (i = 0; i < 2; i++)
    CU_ASSERT_EQUAL(c->exit_code[i], c->exit_idx[i] == 0 ? 3 : -SIGSEGV);
  CU_ASSERT_EQUAL(c->broken, 0);
  /* Nobody left, nobody coming: said once, after the last exit, naming
   * it and the policy. */
  CU_ASSERT_EQUAL(c->empty, 1);
  CU_ASSERT_EQUAL(c->exits_at_empty, 2);
  CU_ASSERT_PTR_NOT_NULL(strstr(c->why, "suptest: no worker left: worker "));
  CU_ASSERT_PTR_NOT_NULL(strstr(c->why, c->exit_idx[1] == 0
                                            ? "exited with code 3"
                                            : "killed by signal 11 (SIGSEGV)"));
  CU_ASSERT_PTR_NOT_NULL(strstr(c->why, "; restart policy temporary"));
  finish(c);
}

static const char *expected_lines_tail(void) {
  return "line 13\nline 14\nline 15\nline 16\nline 17\nline 18\nline 19\n"
         "partial";
}

/* Reads the whole file at fd (from its start). */
static char *slurp(int fd, size_t *len) {
  lseek(fd, 0, SEEK_SET);
  return mpx_test_read_all(fd, len);
}

static void test_stderr_relay_and_tail(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 2, MPX__RESTART_TEMPORARY);
  char path[] = "/tmp/mpx-suptest-XXXXXX";
  char long_tail[MPX__SUP_LINE_MAX + 16];
  char prefix[2][64];
  const char *expect[2][21];
  unsigned got[2] = {0, 0}, relayed = 0, other = 0, i;
  pid_t pid[2] = {0, 0};
  int fd, saved;
  size_t len;
  char *text, *line, *save = NULL;

  c->mode[0] = W_LINES;
  c->value[0] = 5;
  c->mode[1] = W_LONG_LINE;
  c->value[1] = 0;

  /* Our stderr goes to a file for the test. */
  fd = mkstemp(path);
  CU_ASSERT_FATAL(fd >= 0);
  unlink(path);
  fflush(stderr);
  saved = dup(STDERR_FILENO);
  CU_ASSERT_FATAL(saved >= 0);
  dup2(fd, STDERR_FILENO);
  sup_begin(c, &o);
  run_until(c, two_exits, GUARD_S);
  fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);

  CU_ASSERT_EQUAL_FATAL(c->exits, 2);
  for (i = 0; i < 2; i++) {
    unsigned idx = c->exit_idx[i];
    pid[idx] = c->exit_pid[i];
    if (idx == 0) {
      CU_ASSERT_EQUAL(c->exit_code[i], 5);
      CU_ASSERT_STRING_EQUAL(c->exit_tail[i], expected_lines_tail());
    } else {
      memset(long_tail, 'x', MPX__SUP_LINE_MAX);
      strcpy(long_tail + MPX__SUP_LINE_MAX, "\nafter");
      CU_ASSERT_EQUAL(c->exit_code[i], 0);
      CU_ASSERT_STRING_EQUAL(c->exit_tail[i], long_tail);
    }
  }

  /* Every line in the file is relayed, with its worker's prefix, in the
   * order the worker wrote them. */
  for (i = 0; i < 2; i++)
    snprintf(prefix[i], sizeof prefix[i], "[suptest worker %u pid %d] ", i,
             (int)pid[i]);
  {
    static char names[20][16];
    for (i = 0; i < 20; i++) {
      snprintf(names[i], sizeof names[i], "line %02u", i);
      expect[0][i] = names[i];
    }
    expect[0][20] = "partial";
    expect[1][0] = long_tail; /* checked by length below */
    expect[1][1] = "after";
  }
  text = slurp(fd, &len);
  close(fd);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  CU_ASSERT(len > 0 && text[len - 1] == '\n');
  for (line = strtok_r(text, "\n", &save); line != NULL;
       line = strtok_r(NULL, "\n", &save)) {
    unsigned w;
    for (w = 0; w < 2; w++)
      if (strncmp(line, prefix[w], strlen(prefix[w])) == 0) break;
    if (w == 2) {
      fprintf(stderr, "unexpected stderr line: %s\n", line);
      other++;
      continue;
    }
    relayed++;
    line += strlen(prefix[w]);
    if (w == 0 && got[0] < 21) {
      CU_ASSERT_STRING_EQUAL(line, expect[0][got[0]]);
    } else if (w == 1 && got[1] == 0) {
      CU_ASSERT_EQUAL(strlen(line), MPX__SUP_LINE_MAX);
      CU_ASSERT_EQUAL(strspn(line, "x"), MPX__SUP_LINE_MAX);
    } else if (w == 1 && got[1] == 1) {
      CU_ASSERT_STRING_EQUAL(line, "after");
    }
    got[w]++;
  }
  free(text);
  CU_ASSERT_EQUAL(got[0], 21);
  CU_ASSERT_EQUAL(got[1], 2);
  CU_ASSERT_EQUAL(relayed, 23);
  CU_ASSERT_EQUAL(other, 0);
  finish(c);
}

static bool broken_and_done(ctx_t *c) { return c->broken >= 1 && all_done(c); }

static void test_intensity(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 2, MPX__RESTART_PERMANENT);
  unsigned i, killed = 0;
  o.max_restarts = 3;
  o.period = 10;
  c->mode[0] = W_SEGV;
  c->mode[1] = W_PAUSE; /* killed when the supervisor breaks */
  sup_begin(c, &o);
  CU_ASSERT(run_until(c, broken_and_done, GUARD_S));
  settle(c, 0.3);
  CU_ASSERT_EQUAL(c->broken, 1);
  CU_ASSERT(mpx__sup_broken(c->sup));
  CU_ASSERT_EQUAL(c->slot_starts[0], 4);
  CU_ASSERT_EQUAL(c->slot_starts[1], 1);
  CU_ASSERT_EQUAL(c->starts, 5);
  CU_ASSERT_EQUAL(c->exits, 5);
  CU_ASSERT_EQUAL(mpx__sup_restarts(c->sup), 3);
  CU_ASSERT_EQUAL(mpx__sup_alive(c->sup), 0);
  for (i = 0; i < c->exits; i++) {
    if (c->exit_idx[i] == 0) {
      CU_ASSERT_EQUAL(c->exit_code[i], -SIGSEGV);
    } else {
      CU_ASSERT_EQUAL(c->exit_code[i], -SIGKILL);
      killed++;
    }
  }
  CU_ASSERT_EQUAL(killed, 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(c->why, "SIGSEGV"));
  CU_ASSERT_PTR_NOT_NULL(strstr(c->why, "suptest: 4 restarts in 10.0 s (limit 3)"));
  CU_ASSERT_PTR_NOT_NULL(strstr(c->why, "worker 0 (pid "));
  finish(c);
}

static void test_backoff(void) {
  static const double expect[] = {0.05, 0.1, 0.2, 0.2, 0.2};
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 1, MPX__RESTART_PERMANENT);
  unsigned i;
  o.backoff_min = 0.05;
  o.backoff_max = 0.2;
  c->mode[0] = W_EXIT;
  c->value[0] = 1;
  sup_begin(c, &o);
  stop_target = 6;
  CU_ASSERT_FATAL(run_until(c, starts_reached, GUARD_S));
  mpx__sup_stop(c->sup, 5);
  CU_ASSERT(run_until(c, all_done, GUARD_S));
  CU_ASSERT_EQUAL(c->starts, 6);
  /* Lower bounds only (timers fire on the loop's millisecond clock, so
   * allow 5 ms). Gaps between consecutive starts are not compared with
   * each other: two equal delays plus scheduling noise would make that
   * flaky. */
  for (i = 0; i + 1 < c->starts && i < 5; i++) {
    double gap = c->start_t[i + 1] - c->start_t[i];
    if (gap < expect[i] - 0.005)
      fprintf(stderr, "gap %u: %.3f s < %.3f s\n", i, gap, expect[i]);
    CU_ASSERT(gap >= expect[i] - 0.005);
  }
  /* The last one may have met stop()'s SIGTERM first. */
  for (i = 0; i + 1 < c->exits; i++) CU_ASSERT_EQUAL(c->exit_code[i], 1);
  CU_ASSERT(c->exit_code[5] == 1 || c->exit_code[5] == -SIGTERM);
  /* Five restarts made the six starts. A sixth exit that the supervisor
   * saw before stop() (under load it can) schedules a sixth restart,
   * counted, that stop() then cancels; one that stop()'s SIGTERM ended
   * schedules none. */
  unsigned r = mpx__sup_restarts(c->sup);
  if (c->exit_code[5] == -SIGTERM) {
    CU_ASSERT_EQUAL(r, 5);
  } else {
    CU_ASSERT(r == 5 || r == 6);
  }
  finish(c);
}

static void retire_first(ctx_t *c, unsigned idx, pid_t pid) {
  (void)pid;
  if (c->slot_starts[idx] == 1) mpx__sup_retire(c->sup, idx);
}

static void test_retire(void) {
  ctx_t *c = ctx_new();
  /* Transient: a plain exit 0 is not restarted, and no restart at all is
   * allowed; a retirement is restarted anyway, and not counted. */
  mpx__sup_opts_t o = sup_opts(c, 1, MPX__RESTART_TRANSIENT);
  o.max_restarts = 0;
  o.period = 10;
  o.backoff_min = 5;
  o.backoff_max = 5;
  c->mode[0] = W_SLEEP_EXIT;
  c->sleep_ms[0] = 50;
  c->hook_started = retire_first;
  sup_begin(c, &o);
  CU_ASSERT(run_until(c, two_exits, GUARD_S));
  settle(c, 0.3);
  CU_ASSERT_EQUAL(c->starts, 2);
  CU_ASSERT_EQUAL(c->exits, 2);
  CU_ASSERT_EQUAL(c->exit_code[0], 0);
  CU_ASSERT_EQUAL(c->exit_code[1], 0);
  CU_ASSERT_EQUAL(mpx__sup_restarts(c->sup), 0);
  CU_ASSERT_EQUAL(c->broken, 0);
  CU_ASSERT_FALSE(mpx__sup_broken(c->sup));
  finish(c);
}

static void kill_first(ctx_t *c, unsigned idx, pid_t pid) {
  (void)idx;
  /* From outside the supervisor: it has not seen this child exit, so the
   * pid is still this child's. */
  if (c->starts == 1) CU_ASSERT_EQUAL(kill(pid, SIGKILL), 0);
}

static bool two_starts(ctx_t *c) { return c->starts >= 2; }

static void test_external_kill(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 1, MPX__RESTART_PERMANENT);
  c->mode[0] = W_PAUSE;
  c->hook_started = kill_first;
  sup_begin(c, &o);
  CU_ASSERT_FATAL(run_until(c, two_starts, GUARD_S));
  CU_ASSERT_EQUAL(c->exits, 1);
  CU_ASSERT_EQUAL(c->exit_code[0], -SIGKILL);
  CU_ASSERT_EQUAL(c->exit_pid[0], c->start_pid[0]);
  CU_ASSERT_EQUAL(mpx__sup_restarts(c->sup), 1);
  CU_ASSERT_EQUAL(mpx__sup_pid(c->sup, 0), c->start_pid[1]);
  /* mpx__sup_kill goes through the pidfd too */
  CU_ASSERT_EQUAL(mpx__sup_kill(c->sup, 1, SIGTERM), MPX_EINVAL);
  mpx__sup_stop(c->sup, 5);
  CU_ASSERT(run_until(c, all_done, GUARD_S));
  CU_ASSERT_EQUAL(c->starts, 2);
  CU_ASSERT_EQUAL(c->exit_code[1], -SIGTERM);
  CU_ASSERT_EQUAL(mpx__sup_pid(c->sup, 0), 0);
  CU_ASSERT_EQUAL(mpx__sup_kill(c->sup, 0, SIGTERM), 0); /* nobody there */
  finish(c);
}

static bool is_broken(ctx_t *c) { return c->broken >= 1; }

static void test_prepare_failure(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 1, MPX__RESTART_PERMANENT);
  unsigned i;
  o.max_restarts = 2;
  o.period = 10;
  c->prepare_fails = true;
  sup_begin(c, &o);
  /* Reported from the loop, not from inside mpx__sup_start. */
  CU_ASSERT_EQUAL(c->exits, 0);
  CU_ASSERT(run_until(c, is_broken, GUARD_S));
  settle(c, 0.3);
  CU_ASSERT_EQUAL(c->broken, 1);
  CU_ASSERT_EQUAL(c->prepares, 3);
  CU_ASSERT_EQUAL(c->releases, 0);
  CU_ASSERT_EQUAL(c->starts, 0);
  CU_ASSERT_EQUAL(c->exits, 3);
  CU_ASSERT_EQUAL(mpx__sup_restarts(c->sup), 2);
  for (i = 0; i < 3; i++) {
    CU_ASSERT_EQUAL(c->exit_pid[i], 0);
    CU_ASSERT_EQUAL(c->exit_code[i], 127);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(c->exit_tail[i], "unknown start method 'bogus-method'"));
  }
  CU_ASSERT_PTR_NOT_NULL(strstr(c->why, "suptest: 3 restarts in 10.0 s (limit 2)"));
  CU_ASSERT_PTR_NOT_NULL(strstr(c->why, "worker 0 could not start"));
  CU_ASSERT_PTR_NOT_NULL(strstr(c->why, "unknown start method 'bogus-method'"));
  finish(c);
}

static void test_start_failure(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 1, MPX__RESTART_TRANSIENT);
  o.max_restarts = 1;
  o.period = 10;
  o.backoff_min = 0.01;
  o.backoff_max = 0.02;
  c->target_spec = "/nonexistent/libmpx-nothing.so:work";
  sup_begin(c, &o);
  CU_ASSERT(run_until(c, is_broken, GUARD_S));
  settle(c, 0.2);
  CU_ASSERT_EQUAL(c->broken, 1);
  CU_ASSERT_EQUAL(c->prepares, 2);
  CU_ASSERT_EQUAL(c->releases, 2); /* after each attempt */
  CU_ASSERT_EQUAL(c->starts, 0);
  CU_ASSERT_EQUAL(c->exits, 2);
  CU_ASSERT_EQUAL(c->exit_code[0], 127);
  CU_ASSERT_PTR_NOT_NULL(strstr(c->exit_tail[0], "/nonexistent/libmpx-nothing.so"));
  CU_ASSERT_PTR_NOT_NULL(strstr(c->why, "/nonexistent/libmpx-nothing.so"));
  finish(c);
}

/* SIGTERM is ignored once bit 15 of SigIgn is set in /proc/<pid>/status. */
static bool term_ignored(pid_t pid) {
  char path[64], buf[4096], *p;
  unsigned long long mask;
  ssize_t n;
  int fd;
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  p = strstr(buf, "\nSigIgn:");
  if (p == NULL || sscanf(p + 8, "%llx", &mask) != 1) return false;
  return (mask >> (SIGTERM - 1)) & 1;
}

static bool started_and_ignoring(ctx_t *c) {
  return c->starts >= 1 && term_ignored(c->start_pid[0]);
}

static bool one_exit(ctx_t *c) { return c->exits >= 1; }

static void test_stop_grace(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 1, MPX__RESTART_PERMANENT);
  double t0;
  c->mode[0] = W_IGNORE_TERM;
  sup_begin(c, &o);
  CU_ASSERT_FATAL(run_until(c, started_and_ignoring, GUARD_S));
  t0 = mpx_test_now();
  mpx__sup_stop(c->sup, 0.3);
  CU_ASSERT(run_until(c, one_exit, GUARD_S));
  CU_ASSERT(mpx_test_now() - t0 >= 0.29);
  settle(c, 0.2);
  CU_ASSERT_EQUAL(c->exits, 1);
  CU_ASSERT_EQUAL(c->exit_code[0], -SIGKILL);
  CU_ASSERT_EQUAL(c->starts, 1);
  CU_ASSERT_EQUAL(mpx__sup_alive(c->sup), 0);
  finish(c);
}

static void test_stop_during_backoff(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 1, MPX__RESTART_PERMANENT);
  c->mode[0] = W_EXIT;
  c->value[0] = 2;
  o.backoff_min = 0.3;
  o.backoff_max = 1;
  sup_begin(c, &o);
  CU_ASSERT_FATAL(run_until(c, one_exit, GUARD_S));
  /* The restart now waits 0.3 s on the timer. */
  CU_ASSERT_EQUAL(mpx__sup_restarts(c->sup), 1);
  mpx__sup_stop(c->sup, 1);
  settle(c, 0.6);
  CU_ASSERT_EQUAL(c->starts, 1);
  CU_ASSERT_EQUAL(c->exits, 1);
  CU_ASSERT_EQUAL(mpx__sup_alive(c->sup), 0);
  finish(c);
}

static void wait_exit_unreaped(ctx_t *c, unsigned idx, pid_t pid) {
  siginfo_t si;
  (void)c;
  (void)idx;
  /* Blocks the loop until the worker has written everything and exited,
   * so that its pidfd and a full pipe are ready together. */
  memset(&si, 0, sizeof si);
  while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) != 0 &&
         errno == EINTR) {}
}

static void test_drain_at_exit(void) {
  /* All the stderr a worker wrote is read before exited() reports it,
   * even when more is waiting than one readiness callback reads. */
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 1, MPX__RESTART_TEMPORARY);
  const char *end;
  o.quiet = true; /* thousands of lines: kept, not relayed */
  c->mode[0] = W_FLOOD;
  c->value[0] = 4;
  c->hook_started = wait_exit_unreaped;
  sup_begin(c, &o);
  CU_ASSERT(run_until(c, one_exit, GUARD_S));
  CU_ASSERT_EQUAL(c->exit_code[0], 4);
  end = strrchr(c->exit_tail[0], '\n');
  CU_ASSERT_PTR_NOT_NULL_FATAL(end);
  CU_ASSERT_STRING_EQUAL(end + 1, "flood end");
  finish(c);
}

static void test_free_live(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 3, MPX__RESTART_PERMANENT);
  c->mode[0] = c->mode[1] = W_PAUSE;
  c->mode[2] = W_IGNORE_TERM;
  sup_begin(c, &o);
  CU_ASSERT_EQUAL(c->starts, 3);
  CU_ASSERT_EQUAL(mpx__sup_alive(c->sup), 3);
  settle(c, 0.05);
  /* finish(): free kills and reaps them, the loop drains, no exited(). */
  CU_ASSERT_EQUAL(c->exits, 0);
  finish(c);
}

static void test_free_unstarted(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 2, MPX__RESTART_PERMANENT);
  CU_ASSERT_EQUAL_FATAL(mpx__sup_new(&c->sup, &c->loop, &o), 0);
  finish(c);
}

static void test_flapping(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 2, MPX__RESTART_PERMANENT);
  unsigned i, bad = 0;
  o.max_restarts = 100000;
  c->mode[0] = c->mode[1] = W_EXIT;
  sup_begin(c, &o);
  stop_target = 200;
  CU_ASSERT_FATAL(run_until(c, starts_reached, GUARD_S));
  mpx__sup_stop(c->sup, 5);
  CU_ASSERT(run_until(c, all_done, GUARD_S));
  CU_ASSERT_EQUAL(c->exits, c->starts);
  CU_ASSERT_EQUAL(mpx__sup_restarts(c->sup), c->starts - 2);
  for (i = 0; i < c->exits && i < MAX_EVENTS; i++)
    if (c->exit_code[i] != 0 && c->exit_code[i] != -SIGTERM) bad++;
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT_EQUAL(c->broken, 0);
  finish(c);
}

static void test_forkserver(void) {
  ctx_t *c = ctx_new();
  mpx__sup_opts_t o = sup_opts(c, 2, MPX__RESTART_TEMPORARY);
  unsigned i;
  o.quiet = true;
  c->method = MPX_START_FORKSERVER;
  c->mode[0] = W_LINES;
  c->value[0] = 5;
  c->mode[1] = W_SEGV;
  sup_begin(c, &o);
  CU_ASSERT(run_until(c, two_exits, GUARD_S));
  settle(c, 0.2);
  CU_ASSERT_EQUAL_FATAL(c->exits, 2);
  CU_ASSERT_EQUAL(c->starts, 2);
  for (i = 0; i < 2; i++) {
    if (c->exit_idx[i] == 0) {
      CU_ASSERT_EQUAL(c->exit_code[i], 5);
      CU_ASSERT_STRING_EQUAL(c->exit_tail[i], expected_lines_tail());
    } else {
      CU_ASSERT_EQUAL(c->exit_code[i], -SIGSEGV);
      CU_ASSERT_STRING_EQUAL(c->exit_tail[i], "");
    }
  }
  finish(c);
}

static void test_bad_options(void) {
  uv_loop_t loop;
  mpx__sup_t *s = (mpx__sup_t *)&loop;
  mpx__sup_opts_t o = sup_opts(NULL, 1, MPX__RESTART_PERMANENT);
  CU_ASSERT_EQUAL_FATAL(uv_loop_init(&loop), 0);
  o.n = 0;
  CU_ASSERT_EQUAL(mpx__sup_new(&s, &loop, &o), MPX_EINVAL);
  CU_ASSERT_PTR_NULL(s);
  o.n = 1;
  o.prepare = NULL;
  CU_ASSERT_EQUAL(mpx__sup_new(&s, &loop, &o), MPX_EINVAL);
  o.prepare = prepare;
  o.backoff_min = -1;
  CU_ASSERT_EQUAL(mpx__sup_new(&s, &loop, &o), MPX_EINVAL);
  o.backoff_min = 0;
  o.restart = (mpx__restart_t)7;
  CU_ASSERT_EQUAL(mpx__sup_new(&s, &loop, &o), MPX_EINVAL);
  o.restart = MPX__RESTART_PERMANENT;
  o.max_restarts = 2000000;
  CU_ASSERT_EQUAL(mpx__sup_new(&s, &loop, &o), MPX_EINVAL);
  mpx__sup_free(NULL);
  CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
}

MPX_TEST_MAIN("supervisor",
              MPX_TEST(test_bad_options),
              MPX_TEST(test_permanent),
              MPX_TEST(test_transient),
              MPX_TEST(test_temporary),
              MPX_TEST(test_stderr_relay_and_tail),
              MPX_TEST(test_intensity),
              MPX_TEST(test_backoff),
              MPX_TEST(test_retire),
              MPX_TEST(test_external_kill),
              MPX_TEST(test_prepare_failure),
              MPX_TEST(test_start_failure),
              MPX_TEST(test_stop_grace),
              MPX_TEST(test_stop_during_backoff),
              MPX_TEST(test_drain_at_exit),
              MPX_TEST(test_free_live),
              MPX_TEST(test_free_unstarted),
              MPX_TEST(test_flapping),
              MPX_TEST(test_forkserver))
