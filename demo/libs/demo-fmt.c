/* libdemo-fmt.so.1: formats the demo's greeting. */
#include <stdio.h>

const char *demo_fmt(const char *name)
{
    static char buf[128];
    snprintf(buf, sizeof buf, "hello, %s", name);
    return buf;
}
