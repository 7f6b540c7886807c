with source as (

    select * from {{ source('healthpipe', 'indicator_operands') }}

),

renamed as (

    select
        indicator_id,
        operand_alias,
        data_element_id,
        category_option_combo_id,
        attribute_option_combo_id
    from source

)

select * from renamed
