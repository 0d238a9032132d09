module example.com/platform-services

go 1.19
