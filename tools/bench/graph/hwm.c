/* Preloaded (LD_PRELOAD) into the processes a graph benchmark starts, to
 * measure the peak RSS of the one process it asks about: at exit, each
 * process writes its own VmHWM (kB, from /proc/self/status) to
 * $MPX_BENCH_HWM_DIR/PID, and the runner reads the file of the pid it
 * started (mpx run: the coordinator). wait4's ru_maxrss cannot give this:
 * it is the largest of the process and every descendant it reaped, so a
 * worker's peak would hide the coordinator's. A process that ends with
 * _exit (a forked child) writes nothing, which is fine: only the started
 * process is read. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((destructor)) static void hwm_write(void) {
  const char *dir = getenv("MPX_BENCH_HWM_DIR");
  char line[256], path[4096];
  long kb = -1;
  if (dir == NULL) return;
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL) return;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmHWM:", 6) == 0) kb = strtol(line + 6, NULL, 10);
  fclose(f);
  if (kb < 0) return;
  snprintf(path, sizeof path, "%s/%ld", dir, (long)getpid());
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  int n = snprintf(line, sizeof line, "%ld\n", kb);
  if (write(fd, line, (size_t)n) != n) { /* the runner then reports "–" */ }
  close(fd);
}
