/* A tiny X11 client for tests/test_gui.py: libX11 is dlopen'd (no headers needed).
 * xwindow map|nomap [exit]: create a 200x100 green window titled "fexstack xwindow",
 * map it or not, say so, then wait for the end of the run (or exit with "exit"). */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef void *(*open_fn)(const char *);
typedef unsigned long (*root_fn)(void *);
typedef unsigned long (*create_fn)(void *, unsigned long, int, int, unsigned, unsigned,
                                   unsigned, unsigned long, unsigned long);
typedef int (*name_fn)(void *, unsigned long, const char *);
typedef int (*win_fn)(void *, unsigned long);
typedef int (*sync_fn)(void *, int);

int main(int argc, char **argv) {
    int map = argc > 1 && strcmp(argv[1], "map") == 0;
    void *x11 = dlopen("libX11.so.6", RTLD_NOW);
    if (!x11) {
        fprintf(stderr, "xwindow: %s\n", dlerror());
        return 2;
    }
    open_fn XOpenDisplay = (open_fn)dlsym(x11, "XOpenDisplay");
    root_fn XDefaultRootWindow = (root_fn)dlsym(x11, "XDefaultRootWindow");
    create_fn XCreateSimpleWindow = (create_fn)dlsym(x11, "XCreateSimpleWindow");
    name_fn XStoreName = (name_fn)dlsym(x11, "XStoreName");
    win_fn XMapWindow = (win_fn)dlsym(x11, "XMapWindow");
    sync_fn XSync = (sync_fn)dlsym(x11, "XSync");
    void *display = XOpenDisplay(NULL);
    if (!display) {
        fprintf(stderr, "xwindow: cannot open display\n");
        return 3;
    }
    unsigned long window = XCreateSimpleWindow(display, XDefaultRootWindow(display), 10, 10,
                                               200, 100, 0, 0x000000, 0x33aa55);
    XStoreName(display, window, "fexstack xwindow");
    if (map) XMapWindow(display, window);
    XSync(display, 0);
    puts(map ? "xwindow: window mapped" : "xwindow: window created, not mapped");
    fflush(stdout);
    if (argc > 2 && strcmp(argv[2], "exit") == 0) return 0;
    for (;;) sleep(1);
}
