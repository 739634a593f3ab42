/* The library interface fexstack's demo AppImage needs from the demo overlay.
 *
 * libdemo-greet.so.1 (in /usr/lib64 of the overlay) needs libdemo-fmt.so.1.
 * The AppImage ships neither: they must come from the overlay.
 */
#ifndef FEXSTACK_DEMO_H
#define FEXSTACK_DEMO_H

/* libdemo-greet.so.1: a greeting, built with demo_fmt(). */
const char *demo_greet(void);

/* libdemo-fmt.so.1: formats a greeting for the given name. */
const char *demo_fmt(const char *name);

#endif
