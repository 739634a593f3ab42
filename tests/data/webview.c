/* A WebKitGTK 4.1 web view that loads a page and reports it, for the real-app tests.
 *
 * No headers: the few functions it calls are declared here and linked against the real
 * libwebkit2gtk-4.1.so.0, libgtk-3.so.0 and libgobject-2.0.so.0. It prints "page loaded"
 * when WebKit's load-changed signal reports WEBKIT_LOAD_FINISHED, then how the web
 * process was sandboxed (the bwrap processes it sees in /proc), and exits 0; the
 * sandbox is switched on first (WebKitGTK 4.1's default is off); it exits 2 if
 * the web process dies and 3 if nothing happened within 60 seconds.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *gpointer;
typedef int gboolean;
extern void gtk_init(int *argc, char ***argv);
extern void *gtk_window_new(int type);
extern void gtk_window_set_title(void *window, const char *title);
extern void gtk_window_set_default_size(void *window, int width, int height);
extern void gtk_container_add(void *container, void *widget);
extern void gtk_widget_show_all(void *widget);
extern void gtk_main(void);
extern void gtk_main_quit(void);
extern void *webkit_web_view_new(void);
extern void *webkit_web_context_get_default(void);
extern void webkit_web_context_set_sandbox_enabled(void *context, gboolean enabled);
extern gboolean webkit_web_context_get_sandbox_enabled(void *context);
extern void webkit_web_view_load_html(void *view, const char *html, const char *base_uri);
extern unsigned long g_signal_connect_data(void *instance, const char *signal, void (*handler)(void),
                                           gpointer data, void *destroy, int flags);
extern unsigned g_timeout_add(unsigned interval, gboolean (*function)(gpointer), gpointer data);

static int status = 3;

static void sandbox_report(void) {
    DIR *proc = opendir("/proc");
    struct dirent *entry;
    int found = 0;
    if (proc == NULL) return;
    while ((entry = readdir(proc)) != NULL) {
        char path[300], cmdline[4096];
        FILE *fh;
        size_t n;
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/cmdline", entry->d_name);
        fh = fopen(path, "r");
        if (fh == NULL) continue;
        n = fread(cmdline, 1, sizeof cmdline - 1, fh);
        fclose(fh);
        cmdline[n] = 0;
        if (strstr(cmdline, "bwrap") != NULL) {
            for (size_t i = 0; i < n; i++) if (cmdline[i] == 0) cmdline[i] = ' ';
            if (strstr(cmdline, "WebKit") != NULL) {
                printf("sandbox: %.120s\n", cmdline);
                found = 1;
            }
        }
    }
    closedir(proc);
    if (!found) printf("sandbox: no bwrap process seen\n");
}

static void on_load_changed(void *view, int event, gpointer data) {
    (void)view; (void)data;
    printf("load event %d\n", event);
    fflush(stdout);
    if (event == 3) { /* WEBKIT_LOAD_FINISHED */
        printf("page loaded\n");
        sandbox_report();
        fflush(stdout);
        status = 0;
        gtk_main_quit();
    }
}

static gboolean on_crash(void *view, int reason, gpointer data) {
    (void)view; (void)data;
    printf("web process terminated (reason %d)\n", reason);
    fflush(stdout);
    status = 2;
    gtk_main_quit();
    return 1;
}

static gboolean on_timeout(gpointer data) {
    (void)data;
    printf("no page loaded within 60 s\n");
    gtk_main_quit();
    return 0;
}

int main(int argc, char **argv) {
    gtk_init(&argc, &argv);
    /* WebKitGTK 4.1 starts without the sandbox unless asked, before the first web view */
    void *context = webkit_web_context_get_default();
    webkit_web_context_set_sandbox_enabled(context, 1);
    printf("sandbox enabled: %d\n", webkit_web_context_get_sandbox_enabled(context));
    void *window = gtk_window_new(0);
    gtk_window_set_title(window, "fexstack webview");
    gtk_window_set_default_size(window, 300, 200);
    void *view = webkit_web_view_new();
    gtk_container_add(window, view);
    g_signal_connect_data(view, "load-changed", (void (*)(void))on_load_changed, NULL, NULL, 0);
    g_signal_connect_data(view, "web-process-terminated", (void (*)(void))on_crash, NULL, NULL, 0);
    g_timeout_add(60000, on_timeout, NULL);
    gtk_widget_show_all(window);
    webkit_web_view_load_html(view,
        "<html><body style='background:#2a7'><h1>fexstack</h1></body></html>", "about:blank");
    gtk_main();
    return status;
}
