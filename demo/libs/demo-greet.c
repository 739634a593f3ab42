/* libdemo-greet.so.1: the greeting the demo program prints; needs libdemo-fmt.so.1. */
extern const char *demo_fmt(const char *name);

const char *demo_greet(void)
{
    return demo_fmt("overlay");
}
