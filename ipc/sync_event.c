/* placeholder: being written */ typedef int mpx__placeholder_sync_event;
