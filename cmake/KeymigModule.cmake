# keymig_module(NAME [PUBLIC ...] [PRIVATE ...]): the library target keymig_NAME (alias
# keymig::NAME) from NAME/src/*.cpp, with NAME/include as its public surface.
function(keymig_module name)
  cmake_parse_arguments(arg "" "" "PUBLIC;PRIVATE" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/*.cpp)
  if(NOT sources)
    # Headers only so far: still usable by the modules that include them.
    add_library(keymig_${name} INTERFACE)
    add_library(keymig::${name} ALIAS keymig_${name})
    target_include_directories(keymig_${name} INTERFACE include)
    target_link_libraries(keymig_${name} INTERFACE ${arg_PUBLIC})
    return()
  endif()
  add_library(keymig_${name} STATIC ${sources})
  add_library(keymig::${name} ALIAS keymig_${name})
  target_include_directories(keymig_${name} PUBLIC include PRIVATE src)
  target_compile_definitions(keymig_${name} PRIVATE KEYMIG_VERSION="${PROJECT_VERSION}")
  target_link_libraries(keymig_${name} PUBLIC ${arg_PUBLIC} PRIVATE ${arg_PRIVATE})
endfunction()
