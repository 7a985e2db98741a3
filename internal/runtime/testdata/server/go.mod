module zeitwork.test/server

go 1.22
