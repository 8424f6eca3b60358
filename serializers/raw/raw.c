/* placeholder: being written */ typedef int mpx__placeholder_raw;
