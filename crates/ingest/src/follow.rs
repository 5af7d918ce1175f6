//! Following a growing T-Server log file (`serve --follow FILE`): in progress.
