/* fexstack's demo program: prints the greeting from the demo overlay's library. */
#include <stdio.h>

#include "demo.h"

int main(void)
{
    const char *greeting = demo_greet();
    if (greeting == NULL) {
        fputs("fexstack-demo: demo_greet() returned NULL\n", stderr);
        return 1;
    }
    printf("%s\n", greeting);
    puts("fexstack-demo: ok");
    return 0;
}
