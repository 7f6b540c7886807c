select * from {{ ref('int_data_elements') }}
