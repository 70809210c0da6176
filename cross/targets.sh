# Sourced by cross/*.sh: the Raspberry Pi targets and their Debian cross tools.
# Sets gcc (linker and C compiler), sysroot (the target's libc for qemu -L) and qemu.
cross_target_tools() {
  case $1 in
    aarch64-unknown-linux-gnu)
      gcc=aarch64-linux-gnu-gcc; sysroot=/usr/aarch64-linux-gnu; qemu=qemu-aarch64 ;;
    armv7-unknown-linux-gnueabihf)
      gcc=arm-linux-gnueabihf-gcc; sysroot=/usr/arm-linux-gnueabihf; qemu=qemu-arm ;;
    *)
      echo "unsupported target '$1' (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" >&2
      return 2 ;;
  esac
}

# Where cross builds go: the compiler differs from rustup's, so its artifacts stay apart.
cross_target_dir() {
  echo "${SENTIMQ_CROSS_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/cross}"
}
