# Build-time embedding of one file as a C array (cmake -P script):
#   cmake -DINPUT=share/web/index.html -DOUTPUT=build/generated/web_index.cpp -DSYMBOL=pdsd_web_index_html -P embed_file.cmake
# Defines  extern "C" const unsigned char SYMBOL[];  extern "C" const size_t SYMBOL_size;
# (a NUL follows the bytes so the array is never empty; SYMBOL_size excludes it).
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_len)
math(EXPR size "${hex_len} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
file(WRITE "${OUTPUT}.tmp"
  "// Generated from ${INPUT} by cmake/embed_file.cmake; do not edit.\n"
  "#include <cstddef>\n"
  "extern \"C\" const unsigned char ${SYMBOL}[] = {\n${bytes}0x00};\n"
  "extern \"C\" const size_t ${SYMBOL}_size = ${size};\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
