// Processes inside one sandbox: fork (copied memory), vfork + execve,
// posix_spawn with pipes, wait statuses, exit codes and signals of
// children, and #! scripts. Prints one line per check.
#define _GNU_SOURCE
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static int failures;
#define CHECK(c, what) do { int ok_ = (c); printf("%s %s\n", ok_ ? "ok" : "FAIL", what); fflush(stdout); if (!ok_) failures++; } while (0)

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "child")) {
        // Invoked by execve: echo argv[2] to stdout and exit with argv[3].
        printf("%s", argv[2]);
        fflush(stdout);
        return atoi(argv[3]);
    }
    int shared = 1;
    pid_t p = fork();
    if (p == 0) {
        shared = 42;
        _exit(shared == 42 ? 9 : 1);
    }
    int st;
    pid_t w = waitpid(p, &st, 0);
    CHECK(w == p && WIFEXITED(st) && WEXITSTATUS(st) == 9 && shared == 1, "fork: child has its own copy of memory");

    p = fork();
    if (p == 0) { raise(SIGTERM); _exit(0); }
    waitpid(p, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "a child killed by a signal reports it");

    int fds[2];
    pipe(fds);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    char *cargv[] = {argv[0], "child", "through a pipe", "5", NULL};
    pid_t sp;
    int r = posix_spawn(&sp, argv[0], &fa, NULL, cargv, environ);
    close(fds[1]);
    char buf[64] = {0};
    ssize_t n = 0, k;
    while ((k = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0) n += k;
    waitpid(sp, &st, 0);
    CHECK(r == 0 && !strcmp(buf, "through a pipe") && WEXITSTATUS(st) == 5, "posix_spawn with a pipe, exec and exit code");

    p = vfork();
    if (p == 0) {
        char *a[] = {argv[0], "child", "", "3", NULL};
        execve(argv[0], a, environ);
        _exit(127);
    }
    waitpid(p, &st, 0);
    CHECK(WEXITSTATUS(st) == 3, "vfork + execve");

    p = vfork();
    if (p == 0) {
        char *a[] = {"/no/such/program", NULL};
        execve(a[0], a, environ);
        _exit(126);
    }
    waitpid(p, &st, 0);
    CHECK(WEXITSTATUS(st) == 126, "a failed execve returns to the child");

    CHECK(waitpid(-1, &st, WNOHANG) == -1, "no children left: ECHILD");

    FILE *f = fopen("/tmp/script.sh", "w");
    if (!f) { perror("/tmp/script.sh"); return 1; }
    fprintf(f, "#!%s child\n", argv[0]);
    fclose(f);
    chmod("/tmp/script.sh", 0755);
    p = fork();
    if (p == 0) {
        char *a[] = {"/tmp/script.sh", "11", NULL};
        execve(a[0], a, environ);
        _exit(127);
    }
    waitpid(p, &st, 0);
    // argv becomes: prog child /tmp/script.sh 11 -> prints the path, exits 11
    CHECK(WEXITSTATUS(st) == 11, "#! scripts run their interpreter");
    return failures ? 1 : 0;
}
