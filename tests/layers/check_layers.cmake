# The layering of libmpx (DESIGN.md "Layers"), checked on what was built:
#
# 1. No library source includes a file by a relative "../" path: the
#    include directories of each layer's object library (CMakeLists.txt)
#    are the whole rule, and a "../" path would get around them.
# 2. No layer's objects refer to a symbol defined in a higher layer's
#    objects: public headers (mpx.h) are visible everywhere, so a call up
#    through them compiles; it fails here.
#
# cmake -DSRC=<source dir> -DNM=<nm> -DLAYERS_ARG="base|shm|ipc|core"
#       -DOBJ_<layer>="<obj>|..." -DDIRS_<layer>="<dir>|..." -P check_layers.cmake
# (lists are '|'-separated; a layer's dirs may repeat those below it).
cmake_minimum_required(VERSION 3.25)
set(failed FALSE)
string(REPLACE "|" ";" LAYERS "${LAYERS_ARG}")

# -- 1: relative includes --------------------------------------------------
set(all_dirs)
foreach(layer ${LAYERS})
  string(REPLACE "|" ";" dirs "${DIRS_${layer}}")
  list(APPEND all_dirs ${dirs})
endforeach()
list(REMOVE_DUPLICATES all_dirs)
foreach(d ${all_dirs})
    file(GLOB files "${SRC}/${d}/*.c" "${SRC}/${d}/*.h")
    foreach(f ${files})
      file(STRINGS "${f}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[\"<]\\.\\./")
      foreach(l ${lines})
        file(RELATIVE_PATH rel "${SRC}" "${f}")
        message(SEND_ERROR "${rel}: relative include '${l}': include by name, "
                "through the layer's include directories")
        set(failed TRUE)
      endforeach()
    endforeach()
endforeach()

# -- 2: symbols ----------------------------------------------------------
macro(nm_symbols layer mode out)
  string(REPLACE "|" ";" objs "${OBJ_${layer}}")
  if(NOT objs)
    message(FATAL_ERROR "no objects for layer ${layer}")
  endif()
  execute_process(COMMAND ${NM} ${mode} ${objs}
    OUTPUT_VARIABLE text RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${NM} failed: ${err}")
  endif()
  string(REPLACE "\n" ";" text "${text}")
  set(${out})
  foreach(l ${text})
    if(l MATCHES "^[0-9a-fA-F ]* [A-Za-z] ([^ ]+)$")
      list(APPEND ${out} "${CMAKE_MATCH_1}")
    endif()
  endforeach()
  list(REMOVE_DUPLICATES ${out})
endmacro()

foreach(layer ${LAYERS})
  nm_symbols(${layer} "--defined-only;-g" def_${layer})
  nm_symbols(${layer} "-u" undef_${layer})
endforeach()
set(n 0)
list(LENGTH LAYERS count)
math(EXPR last "${count} - 1")
foreach(i RANGE ${last})
  list(GET LAYERS ${i} low)
  math(EXPR next "${i} + 1")
  if(next GREATER last)
    break()
  endif()
  foreach(j RANGE ${next} ${last})
    list(GET LAYERS ${j} high)
    foreach(sym ${undef_${low}})
      list(FIND def_${high} "${sym}" at)
      if(at GREATER -1)
        message(SEND_ERROR "layer ${low} uses ${sym}, defined in the higher "
                "layer ${high}")
        set(failed TRUE)
      endif()
    endforeach()
  endforeach()
  list(LENGTH undef_${low} nu)
  math(EXPR n "${n} + ${nu}")
endforeach()

if(failed)
  message(FATAL_ERROR "the layers are crossed (DESIGN.md \"Layers\")")
endif()
message(STATUS "layers ${LAYERS}: no relative include, no call upward "
        "(${n} undefined references checked)")
