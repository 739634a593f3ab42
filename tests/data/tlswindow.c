/* A GTK 3 window that needs TLS first, for the suggestion loop's real-app test.
 *
 * No headers: the few functions it calls are declared here and linked against the real
 * libgtk-3.so.0, libgio-2.0.so.0, libgobject-2.0.so.0 and libglib-2.0.so.0. GLib's TLS
 * comes from a GIO module (glib-networking's libgiognutls.so, listed in giomodule.cache):
 * without one GLib hands out its dummy backend. Then the program prints GLib's own error
 * ("TLS support is not available", from the dummy backend's file database) and exits 1
 * before any window; with TLS it opens a window titled "fexstack-tls-window" and runs
 * until it is stopped.
 */
#include <stdio.h>

typedef int gboolean;
typedef struct { unsigned domain; int code; char *message; } GError;
extern void *g_tls_backend_get_default(void);
extern gboolean g_tls_backend_supports_tls(void *backend);
extern void *g_tls_file_database_new(const char *anchors, GError **error);
extern void gtk_init(int *argc, char ***argv);
extern void *gtk_window_new(int type);
extern void gtk_window_set_title(void *window, const char *title);
extern void gtk_window_set_default_size(void *window, int width, int height);
extern void *gtk_label_new(const char *text);
extern void gtk_container_add(void *container, void *widget);
extern void gtk_widget_show_all(void *widget);
extern void gtk_main(void);

int main(int argc, char **argv) {
    void *backend = g_tls_backend_get_default();
    if (!g_tls_backend_supports_tls(backend)) {
        GError *error = NULL;
        g_tls_file_database_new("/dev/null", &error);
        fprintf(stderr, "fexstack-tls-window: %s\n",
                error != NULL ? error->message : "the TLS backend does not support TLS");
        return 1;
    }
    printf("TLS backend: supported\n");
    fflush(stdout);
    gtk_init(&argc, &argv);
    void *window = gtk_window_new(0);
    gtk_window_set_title(window, "fexstack-tls-window");
    gtk_window_set_default_size(window, 200, 100);
    gtk_container_add(window, gtk_label_new("TLS ready"));
    gtk_widget_show_all(window);
    gtk_main();
    return 0;
}
