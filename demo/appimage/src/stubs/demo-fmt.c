/* Link-time stand-in for libdemo-fmt.so.1 (never shipped in the AppImage). */
#include "demo.h"

const char *demo_fmt(const char *name)
{
    (void)name;
    return "hello from the link-time stub";
}
