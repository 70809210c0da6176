# Sourced by cross/*.sh: the Raspberry Pi targets and their Debian cross tools.
# Sets gcc (linker and C compiler), sysroot (the target's libc for qemu -L), qemu, cpu (the core
# qemu emulates: a Raspberry Pi's; $SENTIMQ_QEMU_CPU overrides it), dotprod_cpu (a second core
# whose int8 kernels differ, for the exact-products check), emulator (the command line that
# runs a target binary, see below), debian_arch
# (the Debian architecture of its prebuilt standard library), device_reviews (how many of the
# x86_64 reference's IMDB reviews the device tests classify under qemu), and
# tolerance: how far the emulated daemon's int8 scores may be from x86_64's in the end-to-end
# check. Last-bit differences of the f32 kernels move an occasional int8 rounding, which
# re-draws the quantization error (cross/README.md): measured up to 2.7e-2 (aarch64) and
# 1.9e-2 (armv7) on 50 IMDB reviews, with identical labels; 4.2e-2 on armv7 for one short text
# of the emulated daemon test with the stage-2 model (see armv7 below).
cross_target_tools() {
  case $1 in
    aarch64-unknown-linux-gnu)
      gcc=aarch64-linux-gnu-gcc; sysroot=/usr/aarch64-linux-gnu; qemu=qemu-aarch64; debian_arch=arm64
      # Pi 4's core (no dotprod, no SVE); the Pi 5's A76 has SDOT, which tract's int8 uses.
      cpu=cortex-a72 dotprod_cpu=cortex-a76
      device_reviews=50 tolerance=3e-2 ;;
    armv7-unknown-linux-gnueabihf)
      gcc=arm-linux-gnueabihf-gcc; sysroot=/usr/arm-linux-gnueabihf; qemu=qemu-arm; debian_arch=armhf
      # Pi 2's core, the oldest a 32-bit Pi OS runs on (Pi 3 and Zero 2 W run A53s in AArch32).
      cpu=cortex-a7 dotprod_cpu=
      # 5e-2: with the stage-2 model one of the emulated test's 20 texts ("I laughed, I cried,
      # ...", score 0.62) is 0.042 from x86_64 on armv7, while x86_64's own int8 is 0.050 from
      # f32 on it: a re-drawn quantization error, no larger than the one x86_64 has.
      device_reviews=16 tolerance=5e-2 ;;
    *)
      echo "unsupported target '$1' (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" >&2
      return 2 ;;
  esac
  # The prebuilt standard library (libstd-rust-web-dev:<arch>) pulls the target's multiarch
  # glibc into /lib/<triple>/, and the host's /etc/ld.so.cache then lists it. qemu's -L serves
  # the cross package's ld.so from $sysroot, which would otherwise find that newer libc.so.6
  # through the cache: a loader and libc from two glibc builds, which spun forever in
  # pthread_create (the first rayon thread). LD_LIBRARY_PATH keeps the loader and libc from
  # the same package.
  # -cpu: qemu's default ("max") has every extension, SVE included, which the Pis lack and qemu
  # emulates element by element: 8 reviews of the aarch64 device check took 124 s under it,
  # 20 s on cortex-a72 and 13.6 s on cortex-a76 (CI's aarch64 step: 812 s before, 118 s after).
  cpu=${SENTIMQ_QEMU_CPU:-$cpu}
  emulator="$qemu -cpu $cpu -L $sysroot -E LD_LIBRARY_PATH=$sysroot/lib"
}

# Where cross builds go: the compiler differs from rustup's, so its artifacts stay apart.
cross_target_dir() {
  echo "${SENTIMQ_CROSS_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/cross}"
}
