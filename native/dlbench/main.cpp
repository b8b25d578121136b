// The dlbench command (Linux, Android): the whole program is the core in dlbench.cpp.
#include "dlbench.hpp"

int main(int argc, char** argv) { return dl::bench_main(argc, argv); }
