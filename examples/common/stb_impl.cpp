// The example programs' one translation unit that compiles stb_image_write (Debian's libstb-dev
// headers); every other file includes image_io.hpp for the declarations only.
#define FPN_STB_IMPLEMENTATION
#include "image_io.hpp"
