module willowe/bench/fastfake

go 1.24
