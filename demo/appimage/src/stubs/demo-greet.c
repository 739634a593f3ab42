/* Link-time stand-in for libdemo-greet.so.1 (never shipped in the AppImage). */
#include "demo.h"

const char *demo_greet(void)
{
    return demo_fmt("stub");
}
