/* AppRun of the least-privilege fixture AppImage: reports who it runs as and what it can
 * write, one "key: value" line each (see tests/test_privilege.py). Opening for writing
 * is the test; nothing is ever written. argv[1]: a root-owned file in a shared folder. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *writable(const char *path) {
    int fd = open(path, O_WRONLY | O_NOCTTY);
    if (fd < 0) return "no";
    close(fd);
    return "yes";
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--inner") == 0) {
        printf("bwrap-inner: uid %d\n", (int)getuid());
        return 0;
    }
    printf("id-u: %d\n", (int)getuid());
    gid_t groups[256];
    int n = getgroups(256, groups);
    printf("id-G: %d", (int)getgid());
    for (int i = 0; i < n; i++)
        if (groups[i] != getgid()) printf(" %d", (int)groups[i]);
    printf("\n");
    FILE *status = fopen("/proc/self/status", "r");
    char line[512];
    while (status && fgets(line, sizeof line, status))
        if (strncmp(line, "Cap", 3) == 0 || strncmp(line, "NoNewPrivs", 10) == 0)
            fputs(line, stdout);
    if (status) fclose(status);
    /* the mount at "/" (the last one listed wins): the overlay, a mount point */
    FILE *mounts = fopen("/proc/self/mountinfo", "r");
    char root_fs[64] = "none";
    while (mounts && fgets(line, sizeof line, mounts)) {
        char point[256], fstype[64];
        const char *dash = strstr(line, " - ");
        if (sscanf(line, "%*s %*s %*s %*s %255s", point) == 1 && strcmp(point, "/") == 0 &&
            dash && sscanf(dash + 3, "%63s", fstype) == 1)
            snprintf(root_fs, sizeof root_fs, "%s", fstype);
    }
    if (mounts) fclose(mounts);
    printf("root-fs: %s\n", root_fs);
    printf("write-drop_caches: %s\n", writable("/proc/sys/vm/drop_caches"));
    DIR *dev = opendir("/dev");
    struct dirent *e;
    char path[512] = "";
    struct stat st;
    while (dev && (e = readdir(dev))) {
        snprintf(path, sizeof path, "/dev/%s", e->d_name);
        if (stat(path, &st) == 0 && S_ISBLK(st.st_mode)) break;
        path[0] = 0;
    }
    if (dev) closedir(dev);
    printf("block-device: %s\n", path[0] ? path : "none");
    if (path[0]) printf("write-block-device: %s\n", writable(path));
    if (argc > 1) printf("write-shared-root-file: %s\n", writable(argv[1]));
    printf("home: %s writable %s\n", getenv("HOME") ? getenv("HOME") : "-",
           getenv("HOME") && access(getenv("HOME"), W_OK) == 0 ? "yes" : "no");
    printf("tmp-writable: %s\n", access("/tmp", W_OK) == 0 ? "yes" : "no");
    const char *rt = getenv("XDG_RUNTIME_DIR");
    if (rt && stat(rt, &st) == 0)
        printf("runtime-dir: owner %d mode %o writable %s\n", (int)st.st_uid,
               st.st_mode & 07777, access(rt, W_OK) == 0 ? "yes" : "no");
    fflush(stdout);
    if (access("/usr/bin/bwrap", X_OK) == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            execl("/usr/bin/bwrap", "bwrap", "--unshare-user", "--unshare-pid", "--ro-bind",
                  "/", "/", "--proc", "/proc", "--dev", "/dev", argv[0], "--inner", NULL);
            _exit(127);
        }
        int ws = 0;
        waitpid(pid, &ws, 0);
        printf("bwrap: exit %d\n", WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
    } else {
        printf("bwrap: absent\n");
    }
    return 0;
}
