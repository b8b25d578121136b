# Cross-compiling for 64-bit ARM Linux with Debian's cross compilers
# (apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu). The executables are linked statically,
# so the same binary runs under qemu-aarch64-static here and on an Android phone (no bionic needed).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
# Programs from the build machine, libraries and headers only from the target's sysroot...
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# ...but CMake packages (ncnnConfig.cmake) from wherever -D<pkg>_DIR points: the cross-built ncnn in the cache.
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
