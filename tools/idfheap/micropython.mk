# The virtual ESP32's ESP-IDF heap (tools/esp32-unix.sh passes this directory as USER_C_MODULES):
# a helper, not a Python module, so it is kept out of the qstr scan.
SRC_USERMOD_LIB_C += $(USERMOD_DIR)/idfheap.c
