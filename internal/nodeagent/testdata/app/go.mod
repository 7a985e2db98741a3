module zeitwork.test/app

go 1.22
