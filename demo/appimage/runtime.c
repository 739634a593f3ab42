/* The runtime of fexstack's demo AppImage.
 *
 * A real AppImage runtime mounts the SquashFS appended to it (with FUSE) and runs AppRun.
 * fexstack never runs the runtime: it finds where this ELF file ends, extracts the
 * SquashFS host-side with unsquashfs and runs AppRun itself. So this runtime only says so.
 * The packer writes the magic bytes "AI\x02" at offset 8 (e_ident padding) after linking.
 */
#include <stdio.h>

int main(int argc, char **argv)
{
    (void)argc;
    fprintf(stderr,
            "%s: this AppImage is meant to be run by fexstack, which extracts it host-side;\n"
            "extract it with: unsquashfs -o OFFSET -d AppDir %s\n",
            argv[0], argv[0]);
    return 127;
}
