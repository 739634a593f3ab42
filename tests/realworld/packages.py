"""What the corpus holds: Debian trixie amd64 package names (the seeds of two closures).

Trixie (the default) finished Debian's move of /lib, /bin and /sbin into /usr: none of
its packages here has a payload path under those folders but base-files, which ships the
merged-/usr symlinks themselves (``/lib -> usr/lib``, ``/lib64 -> usr/lib64`` ...), and
every program still names /lib64/ld-linux-x86-64.so.2 as its PT_INTERP. Bookworm's
packages still ship /lib/x86_64-linux-gnu, /bin and /sbin paths, so a second corpus
(``SUITES["bookworm"]``, the same seeds under bookworm's names) serves the tests of
installing through a merged-/usr base.

``BASE_SEEDS`` are what Fedora's FEX RootFS carries (shared/docs/FACTS.md, 2026 facts),
by Debian name; the base is their closure. ``CORPUS_SEEDS`` are the rest of the corpus:
WebKitGTK 4.1, GStreamer base and good, libsoup 3, glib-networking, libsecret, a font,
and the programs the GUI tests run. The corpus is the closure of both sets.
"""

from __future__ import annotations

from dataclasses import dataclass

SUITE = "trixie"
ARCH = "amd64"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

BASE_SEEDS: tuple[str, ...] = (
    # glibc, libgcc, libstdc++, libatomic, bash
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "libatomic1",
    "bash",
    # systemd and dbus libraries
    "libsystemd0",
    "libdbus-1-3",
    "libdbus-glib-1-2",
    # TLS, nss, curl, gobject-introspection
    "libssl3t64",
    "libnss3",
    "libcurl4t64",
    "libgirepository-1.0-1",
    # Mesa GL/EGL/GLU and its software driver, libglvnd, Vulkan loader, VA-API
    "libgl1-mesa-dri",
    "libglx-mesa0",
    "libegl-mesa0",
    "libgbm1",
    "libgl1",
    "libegl1",
    "libglx0",
    "libopengl0",
    "libgles2",
    "libglu1-mesa",
    "libvulkan1",
    "libva2",
    # X11 and xcb
    "libx11-6",
    "libx11-xcb1",
    "libxext6",
    "libxrender1",
    "libxrandr2",
    "libxi6",
    "libxcursor1",
    "libxinerama1",
    "libxfixes3",
    "libxcomposite1",
    "libxdamage1",
    "libxxf86vm1",
    "libxss1",
    "libxtst6",
    "libsm6",
    "libice6",
    "libxcb1",
    "libxcb-glx0",
    "libxcb-randr0",
    "libxcb-shape0",
    "libxcb-xfixes0",
    "libxcb-xkb1",
    "libxcb-icccm4",
    "libxcb-image0",
    "libxcb-keysyms1",
    "libxcb-render-util0",
    "libxcb-cursor0",
    "libxkbcommon0",
    "libxkbcommon-x11-0",
    # Wayland client
    "libwayland-client0",
    "libwayland-cursor0",
    "libwayland-egl1",
    # GTK 3 with cairo and pango, harfbuzz
    "libgtk-3-0t64",
    "libcairo2",
    "libpango-1.0-0",
    "libharfbuzz0b",
    # SDL2, OpenAL
    "libsdl2-2.0-0",
    "libopenal1",
)

CORPUS_SEEDS: tuple[str, ...] = (
    "libwebkit2gtk-4.1-0",
    "libgstreamer1.0-0",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "libsoup-3.0-0",
    "glib-networking",
    "libsecret-1-0",
    "fonts-dejavu-core",
    # programs the GUI tests run
    "gtk-3-examples",
    "gstreamer1.0-tools",
    "bubblewrap",
    "xdg-dbus-proxy",
    "shared-mime-info",
    "libglib2.0-bin",
    "libgdk-pixbuf2.0-bin",
    # Not named by any Depends, but rpm's ELF generator makes libcaca0 (pulled by
    # plugins-good) require it: libcaca's GL plugin links libglut.so.3 (libglut.so.3.12
    # in bookworm). Without it the repository is not closed for rpm and nothing that
    # pulls libcaca0 resolves. The build checks the closure (see corpus.check_closed).
    "libglut3.12",
)

# Not in the base on purpose (Fedora's RootFS lacks them): the base build fails if the
# closure of BASE_SEEDS pulls one of these.
NOT_IN_BASE: tuple[str, ...] = (
    "libgstreamer1.0-0",
    "libwebkit2gtk-4.1-0",
    "libsoup-3.0-0",
    "libsecret-1-0",
    "glib-networking",
)


# Trixie renamed these for the 64-bit time_t transition; bookworm has the old names.
BOOKWORM_NAMES = {
    "libgtk-3-0t64": "libgtk-3-0",
    "libssl3t64": "libssl3",
    "libcurl4t64": "libcurl4",
}


@dataclass(frozen=True)
class Suite:
    """A Debian suite the corpus can be made of, with its seeds under its own names."""

    name: str
    release: str  # the Debian major version: a stack's [source].release
    base_seeds: tuple[str, ...]
    corpus_seeds: tuple[str, ...]


# Left out of the bookworm corpus, with why.
BOOKWORM_LEFT_OUT = {
    # bookworm's libopenal1 links libsndio.so.7.0, a compat symlink in libsndio7.0 whose
    # library's SONAME is libsndio.so.7: rpm's generator gives it no libsndio.so.7.0()(64bit)
    # Provides, so the RPM's requirement cannot be met (the loader would find the file).
    "libopenal1": "needs libsndio.so.7.0, which no bookworm package's SONAME provides",
}


def _bookworm(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(BOOKWORM_NAMES.get(n, n) for n in names if n not in BOOKWORM_LEFT_OUT)


SUITES = {
    "trixie": Suite("trixie", "13", BASE_SEEDS, CORPUS_SEEDS),
    "bookworm": Suite("bookworm", "12", _bookworm(BASE_SEEDS), _bookworm(CORPUS_SEEDS)),
}
