# The test hooks exist only in the test build: the shipped libmpx (shared
# and static) names none of their environment variables, and mpx_testing,
# which the suites using them link, names each one (a hook that vanished
# from it would leave those suites testing nothing).
# -DSHIPPED=a|b (libraries) -DTESTING=lib -DHOOKS=A|B|C
string(REPLACE "|" ";" shipped "${SHIPPED}")
string(REPLACE "|" ";" hooks "${HOOKS}")
set(bad 0)
foreach(h ${hooks})
  foreach(lib ${shipped})
    file(STRINGS "${lib}" hit REGEX "${h}")
    if(hit)
      message(SEND_ERROR "${lib} contains the test hook ${h}")
      set(bad 1)
    endif()
  endforeach()
  file(STRINGS "${TESTING}" hit REGEX "${h}")
  if(NOT hit)
    message(SEND_ERROR "${TESTING} lacks the test hook ${h}")
    set(bad 1)
  endif()
endforeach()
if(NOT bad)
  message(STATUS "hooks: none in ${shipped}; all in ${TESTING}")
endif()
