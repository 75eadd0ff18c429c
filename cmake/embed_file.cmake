# Writes the bytes of IN as a C array NAME (plus NAME_len) into the header OUT.
# Usage: cmake -DIN=file -DOUT=header.h -DNAME=symbol -P embed_file.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR n "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
file(WRITE "${OUT}.tmp" "/* generated from ${IN} by cmake/embed_file.cmake: do not edit */\n"
     "static const unsigned char ${NAME}[] = {\n${bytes}0x00};\n"
     "static const unsigned long ${NAME}_len = ${n};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
