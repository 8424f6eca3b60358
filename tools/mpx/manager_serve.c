/* `mpx manager serve`: a manager server on the command line (mpx/manager.h).
 * Prints the bound address as its first line on stdout, serves until a
 * client sends shutdown or SIGINT/SIGTERM arrives, then exits 0. */
#include <errno.h>
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
    "                         of {sha256} (both answers are accepted)\n";

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

int mpx_cli_manager_serve(int argc, char **argv) {
  const char *listen = NULL, *keyfile = NULL;
  const char **exposes = calloc((size_t)argc + 1, sizeof *exposes);
  size_t n_exp = 0;
  mpx_manager_opts_t o = {0};
  unsigned long long v;
  int rc = 2;
  if (exposes == NULL) return 3;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *next = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage_text, stdout);
      free(exposes);
      return 0;
    } else if (strcmp(a, "--legacy-auth") == 0) {
      o.flags |= MPX_AUTH_LEGACY;
      continue;
    }
    if (strcmp(a, "--listen") != 0 && strcmp(a, "--authkey-file") != 0 &&
        strcmp(a, "--expose") != 0 && strcmp(a, "--max-connections") != 0 &&
        strcmp(a, "--max-frame") != 0) {
      rc = usage_error("unknown option '%s'", a);
      goto out;
    }
    if (next == NULL) {
      rc = usage_error("%s needs a value", a);
      goto out;
    }
    i++;
    if (strcmp(a, "--listen") == 0) listen = next;
    else if (strcmp(a, "--authkey-file") == 0) keyfile = next;
    else if (strcmp(a, "--expose") == 0) exposes[n_exp++] = next;
    else if (strcmp(a, "--max-connections") == 0) {
      if (parse_size(next, &v) != 0 || v == 0 || v > 1000000) {
        rc = usage_error("--max-connections '%s': expected 1..1000000", next);
        goto out;
      }
      o.max_connections = (unsigned)v;
    } else {
      if (parse_size(next, &v) != 0 || v == 0) {
        rc = usage_error("--max-frame '%s': expected a positive number of bytes", next);
        goto out;
      }
      o.max_frame = (size_t)v;
    }
  }
  if (listen == NULL) {
    rc = usage_error("%s", "--listen ADDRESS is required");
    goto out;
  }
  if (strncmp(listen, "tcp://", 6) != 0 && strncmp(listen, "unix:", 5) != 0) {
    rc = usage_error("--listen '%s': expected tcp://HOST:PORT, unix:PATH or unix:@NAME",
                     listen);
    goto out;
  }
  if (keyfile == NULL) {
    rc = usage_error("%s", "--authkey-file FILE is required");
    goto out;
  }
  char *key = NULL;
  size_t key_len = 0;
  int kr = read_key(keyfile, &key, &key_len);
  if (kr != 0) {
    fprintf(stderr, "mpx manager serve: --authkey-file '%s': %s\n", keyfile, strerror(-kr));
    rc = 2;
    goto out;
  }
  if (key_len == 0) {
    free(key);
    rc = usage_error("--authkey-file '%s' is empty (a manager needs a key)", keyfile);
    goto out;
  }
  o.address = listen;
  o.authkey = key;
  o.authkey_len = key_len;
  signal(SIGPIPE, SIG_IGN);
  int mr = mpx_manager_new(&g_manager, &o);
  free(key);
  if (mr != 0) {
    fprintf(stderr, "mpx manager serve: %s\n", mpx_last_error());
    rc = mr == MPX_EINVAL ? 2 : 3;
    goto out;
  }
  for (size_t i = 0; i < n_exp; i++)
    if ((rc = expose_one(g_manager, exposes[i])) != 0) {
      mpx_manager_free(g_manager);
      g_manager = NULL;
      goto out;
    }
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
  rc = 0;
out:
  free(exposes);
  return rc;
}
