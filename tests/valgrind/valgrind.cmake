# The valgrind command line of the tests labelled "valgrind", shared by
# tests/interop and tests/agent (each includes this file: variables do not
# cross sibling directories).  Those tests run a representative subset of
# the integration tests with our C binaries, and only those, behind
# $NCGRPC_WRAPPER (see tests/interop/peers.py and tests/agent/agentlib.py):
# a definite or indirect leak, or any memory error, makes valgrind exit
# with 99, which fails the test and prints valgrind's report.
#
# Sets NCGRPC_VALGRIND_WRAPPER to that command line, or to "" when the tests
# cannot run: valgrind is not installed, or this is a sanitizer build
# (NCGRPC_SANITIZE; valgrind and ASan do not mix).
#
#   ctest -L valgrind -j2 --output-on-failure
#
# No suppressions so far: Debian 12's OpenSSL, nghttp2, libuv and glibc
# report no definite or indirect leaks and no errors here.  If a system
# library ever needs one, add a commented tests/valgrind/system.supp and
# --suppressions=${CMAKE_CURRENT_LIST_DIR}/system.supp below.

set(NCGRPC_VALGRIND_WRAPPER "")
if(NOT NCGRPC_SANITIZE)
  find_program(NCGRPC_VALGRIND valgrind)
  if(NCGRPC_VALGRIND)
    set(NCGRPC_VALGRIND_WRAPPER
      "${NCGRPC_VALGRIND} --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --track-fds=no --child-silent-after-fork=yes")
  endif()
endif()
