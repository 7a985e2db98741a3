module example.com/zwgo

go 1.26
