/* `mpx manager serve`: a manager server on the command line (mpx/manager.h).
 * Prints the bound address as its first line on stdout, serves until a
 * client sends shutdown or SIGINT/SIGTERM arrives, then exits 0. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpx.h>

#include "manager_cli.h"

static const char usage_text[] =
    "usage: mpx manager serve --listen ADDRESS --authkey-file FILE\n"
    "                         [--expose TYPE[:PARAM]:NAME ...]\n"
    "                         [--max-connections N] [--max-frame BYTES]\n"
    "                         [--legacy-auth]\n"
    "\n"
    "Serves shared objects to mpx and Python (multiprocessing.managers)\n"
    "clients. Prints the bound address on its first line (tcp://HOST:0 picks\n"
    "a free port), then serves until a client sends shutdown or SIGINT /\n"
    "SIGTERM arrives (exit 0).\n"
    "\n"
    "  --listen ADDRESS       tcp://HOST:PORT, unix:PATH or unix:@NAME\n"
    "  --authkey-file FILE    the authkey: the file's bytes exactly (no\n"
    "                         newline is stripped); must not be empty\n"
    "  --expose TYPE:NAME     publish one object under typeid NAME, as Python's\n"
    "                         register(NAME, callable=lambda: obj): every\n"
    "                         create(NAME) returns that same object. TYPE:\n"
    "                           queue[:MAXSIZE] joinablequeue[:MAXSIZE] dict\n"
    "                           list namespace lock rlock event condition\n"
    "                           semaphore[:VALUE] boundedsemaphore[:VALUE]\n"
    "                           barrier:PARTIES value:TYPECODE (starts at 0)\n"
    "                         The SyncManager typeids (Queue, dict, Lock, ...)\n"
    "                         are always served.\n"
    "  --max-connections N    refuse connections beyond N open ones (1024)\n"
    "  --max-frame BYTES      close a connection sending a longer request\n"
    "                         (64 MiB)\n"
    "  --legacy-auth          send CPython 3.11's HMAC-MD5 challenge instead\n"
    "                         of {sha256} (both answers are accepted)\n"
    "\n"
    "--opt=VALUE and --opt VALUE are the same; -- ends the options.\n";

static mpx_manager_t *g_manager;

static void on_signal(int sig) {
  (void)sig;
  mpx_manager_stop(g_manager); /* async-signal-safe */
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "mpx manager serve: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n(mpx manager serve --help for usage)\n");
  return 2;
}

static int read_key(const char *path, char **key, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return -errno;
  size_t cap = 256, n = 0;
  char *buf = malloc(cap);
  size_t r;
  while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) {
      if (cap >= (1u << 20)) break; /* a key of a megabyte is enough */
      char *nb = realloc(buf, cap *= 2);
      if (nb == NULL) {
        free(buf);
        buf = NULL;
      } else {
        buf = nb;
      }
    }
  }
  int err = ferror(f) ? -EIO : 0;
  fclose(f);
  if (buf == NULL) return -ENOMEM;
  if (err) {
    free(buf);
    return err;
  }
  *key = buf;
  *len = n;
  return 0;
}

static int parse_size(const char *s, unsigned long long *v) {
  char *end;
  if (s == NULL || *s == '\0' || *s == '-') return -1;
  errno = 0;
  *v = strtoull(s, &end, 10);
  return errno || *end != '\0' ? -1 : 0;
}

/* One --expose: TYPE[:PARAM]:NAME. 0, or 2 after a message. */
static int expose_one(mpx_manager_t *m, const char *spec) {
  char buf[512];
  if (strlen(spec) >= sizeof buf) return usage_error("--expose '%s': too long", spec);
  strcpy(buf, spec);
  char *name = strrchr(buf, ':');
  if (name == NULL || name == buf || name[1] == '\0')
    return usage_error("--expose '%s': expected TYPE:NAME", spec);
  *name++ = '\0';
  char *param = strchr(buf, ':');
  if (param) *param++ = '\0';
  static const struct {
    const char *cli, *type;
    int param; /* 0 none, 1 optional int, 2 required int, 3 typecode */
  } types[] = {
      {"queue", "Queue", 1},         {"joinablequeue", "JoinableQueue", 1},
      {"dict", "dict", 0},           {"list", "list", 0},
      {"namespace", "Namespace", 0}, {"lock", "Lock", 0},
      {"rlock", "RLock", 0},         {"event", "Event", 0},
      {"condition", "Condition", 0}, {"semaphore", "Semaphore", 1},
      {"boundedsemaphore", "BoundedSemaphore", 1},
      {"barrier", "Barrier", 2},     {"value", "Value", 3},
  };
  size_t i;
  for (i = 0; i < sizeof types / sizeof types[0]; i++)
    if (strcmp(types[i].cli, buf) == 0) break;
  if (i == sizeof types / sizeof types[0])
    return usage_error("--expose: unknown TYPE '%s' (queue, joinablequeue, "
                       "dict, list, namespace, lock, rlock, event, condition, "
                       "semaphore, boundedsemaphore, barrier:N, value:TYPECODE)",
                       buf);
  mpx_obj_t *args = mpx_obj_tuple(2);
  if (args == NULL) return 3;
  unsigned long long v;
  if (types[i].param == 0 && param)
    return mpx_obj_release(args), usage_error("--expose '%s': this TYPE takes no parameter", spec);
  if (types[i].param == 2 && !param)
    return mpx_obj_release(args), usage_error("--expose '%s': barrier needs :PARTIES", spec);
  if (types[i].param == 3) {
    if (!param || strlen(param) != 1 || !strchr("bBhHiIlLqQfd", param[0]))
      return mpx_obj_release(args),
             usage_error("--expose '%s': value needs a numeric TYPECODE "
                         "(b B h H i I l L q Q f d)", spec);
    mpx_obj_append(args, mpx_obj_str(param, 1));
    mpx_obj_append(args, strchr("fd", param[0]) ? mpx_obj_float(0) : mpx_obj_int(0));
  } else if (param) {
    if (parse_size(param, &v) != 0 || v > (1ull << 31))
      return mpx_obj_release(args),
             usage_error("--expose '%s': the parameter must be a non-negative integer", spec);
    mpx_obj_append(args, mpx_obj_int((int64_t)v));
  }
  int rc = mpx_manager_expose(m, name, types[i].type, args, NULL);
  mpx_obj_release(args);
  if (rc != 0) {
    fprintf(stderr, "mpx manager serve: --expose '%s': %s\n", spec, mpx_last_error());
    return 2;
  }
  return 0;
}

/* What the command line asks for. */
typedef struct {
  const char *listen, *keyfile;
  const char **exposes; /* argc of them at most */
  size_t n_exp;
  mpx_manager_opts_t o;
} serve_args_t;

enum { OPT_LISTEN = 256, OPT_AUTHKEY_FILE, OPT_EXPOSE, OPT_MAX_CONNECTIONS, OPT_MAX_FRAME,
       OPT_LEGACY_AUTH };

static const struct option serve_opts[] = {
    {"help", no_argument, NULL, 'h'},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"authkey-file", required_argument, NULL, OPT_AUTHKEY_FILE},
    {"expose", required_argument, NULL, OPT_EXPOSE},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"max-frame", required_argument, NULL, OPT_MAX_FRAME},
    {"legacy-auth", no_argument, NULL, OPT_LEGACY_AUTH},
    {NULL, 0, NULL, 0}};

/* One option getopt_long returned, into a: 0, or 2 after a message. */
static int take_opt(serve_args_t *a, int c, const char *v) {
  unsigned long long n;
  switch (c) {
  case OPT_LISTEN: a->listen = v; break;
  case OPT_AUTHKEY_FILE: a->keyfile = v; break;
  case OPT_EXPOSE: a->exposes[a->n_exp++] = v; break;
  case OPT_LEGACY_AUTH: a->o.flags |= MPX_AUTH_LEGACY; break;
  case OPT_MAX_CONNECTIONS:
    if (parse_size(v, &n) != 0 || n == 0 || n > 1000000)
      return usage_error("--max-connections '%s': expected 1..1000000", v);
    a->o.max_connections = (unsigned)n;
    break;
  case OPT_MAX_FRAME:
    if (parse_size(v, &n) != 0 || n == 0)
      return usage_error("--max-frame '%s': expected a positive number of bytes", v);
    a->o.max_frame = (size_t)n;
    break;
  }
  return 0;
}

/* argv (argv[0] the command's name) into a: 0, -1 after --help, or 2
 * after a message. Options come in any order; serve takes no operands. */
static int parse_args(int argc, char **argv, serve_args_t *a) {
  int c, rc;
  optind = 0; /* a fresh scan (GNU: 0 also resets its state) */
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", serve_opts, NULL)) != -1) {
    if (c == 'h') {
      fputs(usage_text, stdout);
      return -1;
    }
    if (c == '?' || c == ':') return mpx_cli_opt_error("serve", c, argc, argv, serve_opts);
    if ((rc = take_opt(a, c, optarg)) != 0) return rc;
  }
  if (optind < argc)
    return usage_error("unexpected argument '%s' (serve takes options only)", argv[optind]);
  if (a->listen == NULL) return usage_error("%s", "--listen ADDRESS is required");
  if (strncmp(a->listen, "tcp://", 6) != 0 && strncmp(a->listen, "unix:", 5) != 0)
    return usage_error("--listen '%s': expected tcp://HOST:PORT, unix:PATH or unix:@NAME",
                       a->listen);
  if (a->keyfile == NULL) return usage_error("%s", "--authkey-file FILE is required");
  return 0;
}

/* The key file's bytes into a->o: 0, or 2 after a message. */
static int load_key(serve_args_t *a) {
  char *key = NULL;
  size_t len = 0;
  int kr = read_key(a->keyfile, &key, &len);
  if (kr != 0) {
    fprintf(stderr, "mpx manager serve: --authkey-file '%s': %s\n", a->keyfile,
            strerror(-kr));
    return 2;
  }
  if (len == 0) {
    free(key);
    return usage_error("--authkey-file '%s' is empty (a manager needs a key)", a->keyfile);
  }
  a->o.authkey = key;
  a->o.authkey_len = len;
  return 0;
}

/* g_manager bound to a->listen with every --expose published: 0, or the
 * exit code after a message (g_manager NULL). Frees the key. */
static int start_manager(serve_args_t *a) {
  int rc = 0;
  a->o.address = a->listen;
  signal(SIGPIPE, SIG_IGN);
  int mr = mpx_manager_new(&g_manager, &a->o);
  free((void *)a->o.authkey);
  a->o.authkey = NULL;
  if (mr != 0) {
    fprintf(stderr, "mpx manager serve: %s\n", mpx_last_error());
    return mr == MPX_EINVAL ? 2 : 3;
  }
  for (size_t i = 0; i < a->n_exp && rc == 0; i++) rc = expose_one(g_manager, a->exposes[i]);
  if (rc != 0) {
    mpx_manager_free(g_manager);
    g_manager = NULL;
  }
  return rc;
}

/* Prints the address, serves until shutdown or SIGINT/SIGTERM, logs the
 * figures and frees g_manager. */
static void serve_until_stopped(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  printf("%s\n", mpx_manager_address(g_manager));
  fflush(stdout);
  mpx_manager_wait(g_manager, -1);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  mpx_manager_stats_t st;
  mpx_manager_stats(g_manager, &st);
  mpx_log(MPX_LOG_INFO, "manager: stopped after %llu connections, %llu requests, "
          "%llu auth failures", (unsigned long long)st.connections,
          (unsigned long long)st.requests, (unsigned long long)st.auth_failures);
  mpx_manager_free(g_manager);
  g_manager = NULL;
}

int mpx_cli_manager_serve(int argc, char **argv) {
  serve_args_t a = {0};
  char **av = mpx_cli_named_argv("mpx manager serve", argc, argv);
  a.exposes = calloc((size_t)argc + 1, sizeof *a.exposes);
  int rc = av == NULL || a.exposes == NULL ? 3 : parse_args(argc + 1, av, &a);
  if (rc == 0) rc = load_key(&a);
  if (rc == 0) rc = start_manager(&a);
  if (rc == 0) serve_until_stopped();
  free(a.exposes);
  free(av);
  return rc < 0 ? 0 : rc;
}
