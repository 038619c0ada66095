# Runs a command and fails unless it exits with the expected code; ctest matches its message separately
# (PASS_REGULAR_EXPRESSION), because a matching regular expression alone would let any exit code pass.
#   cmake -DEXPECT_EXIT=<code> -P expect_exit.cmake -- <command> [args...]
set(command)
set(collect FALSE)
math(EXPR last "${CMAKE_ARGC} - 1")
foreach(i RANGE ${last})
  if(collect)
    list(APPEND command "${CMAKE_ARGV${i}}")
  elseif(CMAKE_ARGV${i} STREQUAL "--")
    set(collect TRUE)
  endif()
endforeach()
if(NOT command OR NOT DEFINED EXPECT_EXIT)
  message(FATAL_ERROR "usage: cmake -DEXPECT_EXIT=<code> -P expect_exit.cmake -- <command> [args...]")
endif()

execute_process(COMMAND ${command} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE out)
message("${out}")
if(NOT code STREQUAL EXPECT_EXIT)
  message(FATAL_ERROR "wrong exit code: ${code}, expected ${EXPECT_EXIT}")
endif()
message("exit code ${code} as expected")
